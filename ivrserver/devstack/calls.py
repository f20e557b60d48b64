"""`make call`: one SIPp call to the running `make run` stack, then what became of it.

The call is found by its Linkedid: before dialling, a watcher logs in to AMI (the stack's settings
file, run/ivrserver.yaml) and takes the Newchannel of our caller's number to the dialled
number. The contact record is the one ivrserver writes for that Linkedid (the id every instance
derives from it); it is read once it is final, or after `record_wait` seconds as it stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from ivrserver import config
from ivrserver.devstack.ports import StackPorts
from ivrserver.devstack.process import DevStackError
from ivrserver.devstack.sipp import SippResult, start_caller
from ivrserver.domain.model import Contact, Outcome
from ivrserver.services.contact_tracker import contact_id_of_call
from ivrserver.store.contacts import get_contact
from ivrserver.store.keys import Keys


class AmiCallWatch:
    """Minimal AMI reader: login, then the Linkedid of the first Newchannel from `caller` to `exten`.

    Plain `Key: Value` blocks (AMI's wire format); only the two headers compared and the Linkedid
    are read, and nothing read is ever sent back.
    """

    def __init__(self, settings: config.AmiSettings, caller: str, exten: str) -> None:
        self.settings = settings
        self.caller = caller
        self.exten = exten
        self.linkedid: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 5.0) -> None:
        ami = self.settings
        try:
            reader, self._writer = await asyncio.wait_for(asyncio.open_connection(ami.host, ami.port), timeout)
            await asyncio.wait_for(reader.readline(), timeout)    # "Asterisk Call Manager/…"
            self._writer.write(f"Action: Login\r\nUsername: {ami.username}\r\nSecret: {ami.secret}\r\n"
                               "Events: call\r\nActionID: make-call\r\n\r\n".encode())
            await self._writer.drain()
            reply = await asyncio.wait_for(self._block(reader), timeout)
        except (OSError, TimeoutError) as exc:
            raise DevStackError(f"AMI at {ami.host}:{ami.port} does not answer ({exc}): is `make run` up?") from None
        if reply.get("Response") != "Success":
            raise DevStackError(f"AMI login as {ami.username} refused: is run/ivrserver.yaml from this `make run`?")
        self._task = asyncio.create_task(self._watch(reader))

    @staticmethod
    async def _block(reader: asyncio.StreamReader) -> dict[str, str]:
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if not line:
                raise OSError("AMI closed the connection")
            text = line.decode(errors="replace").rstrip("\r\n")
            if not text:
                if headers:
                    return headers
                continue
            name, _, value = text.partition(":")
            headers.setdefault(name.strip(), value.strip())

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        try:
            while not self.linkedid.done():
                event = await self._block(reader)
                if (event.get("Event") == "Newchannel" and event.get("CallerIDNum") == self.caller
                        and event.get("Exten") == self.exten and event.get("Linkedid")):
                    self.linkedid.set_result(event["Linkedid"])
        except (OSError, asyncio.IncompleteReadError) as exc:
            if not self.linkedid.done():
                self.linkedid.set_exception(DevStackError(f"AMI connection lost: {exc}"))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.linkedid.done():
            self.linkedid.cancel()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()


@dataclass(frozen=True)
class CallReport:
    caller: str
    number: str
    digits: str
    sipp: SippResult
    linkedid: str | None
    contact: Contact | None

    def describe(self) -> str:
        lines = [f"call from {self.caller} to {self.number}, digits {self.digits or 'none'}: "
                 + ("SIPp completed it" if self.sipp.ok else "SIPp reports a failure")]
        if not self.sipp.ok:
            lines.append(self.sipp.describe())
        c = self.contact
        if self.linkedid is None:
            lines.append("  no channel of this call seen on AMI: did it reach Asterisk?")
        elif c is None:
            lines.append(f"  no contact record for call {self.linkedid} (is ivrserver up? see make run's output)")
        else:
            who = f"customer {c.customer_id}" if c.customer_id else "unknown caller"
            lines += [f"  caller     {c.number or '(withheld)'} — {who}",
                      f"  IVR path   {' > '.join(c.ivr_path) or '(no menu)'}",
                      f"  route      {c.routing_reason or '(none recorded)'}"]
            if c.queue:
                wait = f", waited {c.wait_seconds:.1f} s" if c.wait_seconds is not None else ""
                lines.append(f"  queue      {c.queue}{wait}")
            if c.agents:
                talk = f", talked {c.talk_seconds:.1f} s" if c.talk_seconds is not None else ""
                lines.append(f"  agent      {', '.join(c.agents)} answered{talk}")
            else:
                lines.append("  agent      nobody answered")
            still = " (still in progress: record not final yet)" if c.outcome is Outcome.IN_PROGRESS else ""
            lines.append(f"  outcome    {c.outcome.value}{still} — contact record {c.id}")
        return "\n".join(lines)


async def _final_contact(settings: config.Settings, linkedid: str, wait: float) -> Contact | None:
    keys = Keys(prefix=settings.redis.prefix)
    client = aioredis.Redis.from_url(settings.redis.url, decode_responses=True, socket_timeout=5)
    contact_id = contact_id_of_call(keys, linkedid)
    deadline = time.monotonic() + wait
    try:
        contact = None
        while True:
            contact = await get_contact(client, keys, contact_id)
            if (contact is not None and contact.ended_at is not None) or time.monotonic() > deadline:
                return contact
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


def _stack_files(settings_file: Path, ports_file: Path) -> tuple[config.Settings, StackPorts]:
    if not settings_file.is_file() or not ports_file.is_file():
        raise DevStackError(f"no {settings_file.name} / {ports_file.name} in {settings_file.parent}: "
                            "start the stack with `make run` first")
    return config.load(settings_file), StackPorts(**json.loads(ports_file.read_text()))


async def place_call(settings_file: Path, ports_file: Path, *, digits: str, caller: str, number: str,
                     info: bool = False, hold_ms: int = 10000, timeout: float = 60.0,
                     record_wait: float = 10.0) -> CallReport:
    """Place one call with the stack `make run` described in `settings_file` (ivrserver settings)
    and `ports_file` (its StackPorts as JSON); report what became of it (route, agent, outcome)."""
    settings, ports = await asyncio.to_thread(_stack_files, settings_file, ports_file)
    watch = AmiCallWatch(settings.ami, caller, number)
    await watch.start()
    try:
        proc = await start_caller(ports, digits, mode="info" if info else "rfc4733", number=caller,
                                  hold_ms=hold_ms, dial=number, timeout=timeout)
        result = await proc.wait()
        linkedid = None
        with contextlib.suppress(TimeoutError, DevStackError):
            linkedid = await asyncio.wait_for(asyncio.shield(watch.linkedid), 2)
    finally:
        await watch.close()
    contact = await _final_contact(settings, linkedid, record_wait) if linkedid else None
    return CallReport(caller=caller, number=number, digits=digits, sipp=result, linkedid=linkedid,
                      contact=contact)

