"""A simulated outage through a real Asterisk 22: hundreds of SIPp callers from one city report the
same fault, and what the incident machinery makes of it (issue 19, "Done when").

    .venv/bin/python bench/outage_bench.py                      # 300 reporters at 20/s, wave 2 of 60 + 20
    .venv/bin/python bench/outage_bench.py --reporters 500 --rate 30 --chaoyang 100 --beijing 40

Stack: the one of bench/e2e_bench.py (its IvrProcess, config and metrics helpers) — a private Redis,
Asterisk 22 (LocalAsterisk), ivrserver in its own process (`python -m ivrserver -c <tmp yaml> run`,
phone.default_region CN, mass-fault incidents on with the SHIPPED policy ivrserver/defaults/
incidents.yaml: min_count 20, ratio 5, window 600 s, detector interval 0.5 s), SIPp callers from
tests/sipp/caller.xml — a copy of it in the run's directory that takes each call's From number from
an injection file ([field0], so every caller has a distinct number) and waits exactly `hold` ms
after its digits before hanging up (the 60 s rung of its hold ladder rewritten). Outgoing webhooks
go to a real aiohttp receiver in this process (webhooks.yaml: endpoint `noc`, events incident.*,
an HMAC secret file; each request's X-Ivrserver-Signature is verified, as the integration test's
receiver does); the back office acts over REST with a token of scope `incidents`.

One run:
 1. wave 1: `--reporters` callers from distinct Chaoyang (Liaoning) mobile numbers at `--rate`
    calls/s press 3 4 1 ("faults → report a fault → mobile data"; the IVR thanks them and hangs
    up), each hangs up itself 15 s after its last key if the IVR has not (a caller the
    announcement sent to the faults queue: no agent phones run here);
 2. the back office acknowledges and sets an expected fix time (PATCH; the announcement is
    rendered again with it);
 3. wave 2, Chaoyang and Beijing callers at the same time (two SIPp endpoints): `--chaoyang`
    callers from new Chaoyang numbers, half press 1 once answered (subscribe), half press nothing
    and hang up 2 s after the announcement and its offer have played (absorbed: heard it); and
    `--beijing` callers from Beijing numbers doing the same (they must hear the normal menu);
 4. the back office resolves over REST: the notices to everyone who asked, heard it or reported
    it, and the archived figures.
Printed: incidents opened, the complaint that crossed min_count and the detection latency (from
that complaint's own time in the callers' sorted set to opened_at; the code's time_to_detect is
from the FIRST complaint), the first caller offered the announcement, work orders received
(signature verified), what wave-2 callers heard (IVR paths: PathKind INCIDENT; callers told apart
by their contact record's number), subscriptions, the resolve's notices by state and reason (read
from Redis), the archived figures, SIPp's failed calls, ivrserver's and Asterisk's CPU.

Who is told at resolve: the wave-2 callers who press 1 are, by default, customers whose
preferences allow calls at any hour (the integration test's ALL_DAY; the company's calling hours
are set to all day, as in the integration tests): their notices ring at once, a SIPp UAS behind
the `customers` trunk answers each, and the table says how many rang and whether anyone was
called twice (a second resolve follows). Everyone else — and everyone with
`--unknown-subscribers` — has no customer record: told at the number they called from within the
default allowed hours (09:00-20:00 in the number's region, Asia/Shanghai); outside those hours
their notices wait for the morning and no phone rings during the run (the table says so). No
assertions: a benchmark prints what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import os
import re
import shutil
import sys
import tempfile
import time
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import aiohttp  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
import yaml  # noqa: E402
from e2e_bench import REPO, IvrProcess, metric_total  # noqa: E402
from fastagi_bench import PREFIX, cpu_seconds, ivrserver_config, loadavg  # noqa: E402

from ivrserver import config as ivr_config  # noqa: E402
from ivrserver.devstack.asterisk import HOTLINE, LocalAsterisk  # noqa: E402
from ivrserver.devstack.ports import StackPorts  # noqa: E402
from ivrserver.devstack.redis import LocalRedis  # noqa: E402
from ivrserver.devstack.rtp import dtmf_pcaps  # noqa: E402
from ivrserver.devstack.sipp import SIPP_DIR, SippResult, caller_variables, start_sipp  # noqa: E402
from ivrserver.devstack.webhook_receiver import SignedReceiver  # noqa: E402
from ivrserver.domain import incidents as inc  # noqa: E402
from ivrserver.domain import menu_engine as e  # noqa: E402
from ivrserver.domain.model import ContactPreferences, Customer  # noqa: E402
from ivrserver.domain.notices import NoticeState, notice_id  # noqa: E402
from ivrserver.files import incident_policy  # noqa: E402
from ivrserver.services.contact_tracker import contact_id_of_call  # noqa: E402
from ivrserver.services.speech import SpeechRenderer  # noqa: E402
from ivrserver.store import callpath, customers  # noqa: E402
from ivrserver.store import contacts as contact_store  # noqa: E402
from ivrserver.store.keys import Keys  # noqa: E402
from ivrserver.store.notices import NoticeStore  # noqa: E402
from ivrserver.web.backoffice import digest  # noqa: E402

SECRET = b"outage-bench-noc-secret-0123456789"
NOC_TOKEN = "noc-" + "0badc0de" * 5
CHAOYANG = "1390421{:04d}"  # national mobile numbers of Chaoyang, Liaoning (phone.default_region CN)
BEIJING = "1380013{:04d}"
AREA = "chaoyang-liaoning"
FAULT_DIGITS = "341"  # faults → report a fault → mobile data
ALL_DAY = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")
WAVE1_HOLD_MS = 15000  # after the last key: the IVR's thanks and hang-up come well before


# ------------------------------------------------------------------------------ the network team


# ------------------------------------------------------------------------------ callers


def scenario(workdir: Path, hold_ms: int) -> Path:
    """caller.xml with the From number from the injection file's first field and the 60 s hold
    rung waiting exactly `hold_ms` (the calls pass hold_ms 60000 to take that rung)."""
    text = (SIPP_DIR / "caller.xml").read_text(encoding="iso-8859-1")
    text = text.replace("[$from_user]", "[field0]")
    globals_ = '<Global variables="digits,from_user,mode,hold_ms" />'
    assert globals_ in text, "caller.xml's variables changed"
    text = text.replace(globals_, '<Global variables="digits,mode,hold_ms" />')  # SIPp refuses an unused one
    rung = '<recv request="BYE" timeout="60000" ontimeout="send_bye" next="got_bye" />'
    assert rung in text, "caller.xml's 60 s hold rung changed"
    text = text.replace(rung, rung.replace('"60000"', f'"{max(100, hold_ms)}"'))
    path = workdir / f"caller-hold{hold_ms}.xml"
    path.write_text(text, encoding="iso-8859-1")
    return path


@dataclass
class Group:
    name: str
    numbers: list[str]
    digits: str
    hold_ms: int
    result: SippResult | None = None
    started: float = 0.0
    ended: float = 0.0

    @property
    def failed(self) -> int:
        if self.result is None:
            return len(self.numbers)
        lost = max(0, len(self.numbers) - self.result.successful - self.result.failed)
        return self.result.failed + lost


async def run_group(asterisk: LocalAsterisk, workdir: Path, group: Group, rate: float, *, info: bool = False) -> Group:
    """One SIPp run: every number of the group once, at `rate` calls/s."""
    inject = workdir / f"numbers-{group.name}.csv"
    inject.write_text("SEQUENTIAL\n" + "".join(f"{n};\n" for n in group.numbers))
    port = asterisk.ports.caller_info_port if info else asterisk.ports.caller_port
    variables = caller_variables(group.digits, mode="info" if info else "rfc4733", hold_ms=60000)
    del variables["from_user"]  # the injection file's field0
    calls = len(group.numbers)
    longest = 2 + group.hold_ms / 1000 + 10
    group.started = time.time()
    sipp = await start_sipp(
        scenario(workdir, group.hold_ms), local_port=port, remote=f"127.0.0.1:{asterisk.ports.sip_port}",
        service=HOTLINE, calls=calls, variables=variables, files=await asyncio.to_thread(dtmf_pcaps, group.digits),
        timeout=calls / rate + longest + 60,
        extra_args=["-inf", str(inject), "-r", f"{rate:g}", "-rp", "1000", "-l", str(int(rate * longest) + 50)])
    group.result = await sipp.wait()
    group.ended = time.time()
    return group


# ------------------------------------------------------------------------------ the run


def settings_for(workdir: Path, base: Path, receiver: SignedReceiver) -> tuple[Path, int]:
    """e2e's config with numbers in national form (CN), the shipped incidents policy, the NOC
    webhook endpoint and a back-office token of scope `incidents`; (its path, the web port)."""
    data = yaml.safe_load(base.read_text())
    data["phone"] = {**data.get("phone", {}), "default_region": "CN"}
    shutil.copy(REPO / "ivrserver" / "defaults" / "incidents.yaml", workdir / "incidents.yaml")
    data["incidents"] = {"enabled": True, "policy_file": str(workdir / "incidents.yaml")}
    secret = workdir / "noc.secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    (workdir / "webhooks.yaml").write_text(yaml.safe_dump({"endpoints": [
        {"name": "noc", "url": receiver.url, "events": ["incident.*"], "secret_file": str(secret)}]}))
    (workdir / "tokens.yaml").write_text(f'noc: {{digest: "{digest(NOC_TOKEN)}", scopes: [incidents]}}\n')
    # the company's calling hours all day (as the integration tests): whether a notice rings now is
    # the customer's allowed hours alone (ALL_DAY for the known subscribers, 09:00-20:00 in the
    # number's region for unknown numbers)
    data["callbacks"] = {"calling_from": "00:00", "calling_until": "23:59"}
    data["webhooks"] = {"endpoints_file": str(workdir / "webhooks.yaml")}
    data["web"] = {**data["web"], "backoffice_tokens_file": str(workdir / "tokens.yaml")}
    path = workdir / "ivrserver-outage.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, int(data["web"]["port"])


async def wait_for(probe: Any, timeout: float, interval: float = 0.1) -> Any:
    """`probe()` until it answers something true or `timeout` passed; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            return found
        await asyncio.sleep(interval)


async def offer_seconds(settings_path: Path, incident: inc.Incident, policy: inc.Policy) -> float:
    """How long the announcement and its offer play in English (the clips ivrserver renders: the
    same text gives the same cached file, rendered here only if the server has not yet)."""
    settings = ivr_config.load(settings_path)
    speech = SpeechRenderer.from_settings(settings.prompts, settings.asterisk.sounds_dir)
    zone = zoneinfo.ZoneInfo(policy.timezone)
    texts = [inc.announcement_text(incident, policy, "en", zone), inc.OFFER_TEXT["en"]]
    return sum([(await speech.clip(t, "en")).seconds for t in texts])


def hms(at: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at))


@dataclass
class Cpu:
    ivr: float = 0.0
    ast: float = 0.0


async def bench(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="outage-bench-"))
    redis = LocalRedis()
    ports = StackPorts.free()
    asterisk = LocalAsterisk(ports, name=f"outage-bench-{os.getpid()}")
    receiver = SignedReceiver(SECRET)
    ivr: IvrProcess | None = None
    client: aioredis.Redis | None = None
    try:
        await redis.start()
        await receiver.start()
        print(f"== starting Asterisk (ports from {ports.sip_port}) ...", flush=True)
        await asterisk.start()
        proc = getattr(asterisk, "_proc", None)
        if proc is None:
            raise SystemExit("no Asterisk process")
        ast_pid = int(proc.pid)
        base = ivrserver_config(workdir, redis.url, ports.agi_port, ami_port=ports.ami_port,
                                ami_secret=asterisk.ami_secret, asterisk_etc=str(asterisk.etc_dir),
                                sounds_dir=str(asterisk.sounds_dir), log_level=args.log_level)
        path, web_port = settings_for(workdir, base, receiver)
        ivr = IvrProcess(path, web_port, workdir / "ivrserver.log")
        await ivr.start()
        client = aioredis.Redis.from_url(redis.url, decode_responses=True)
        await run(args, workdir, asterisk, ast_pid, ivr, client, receiver, path)
    finally:
        if client is not None:
            await client.aclose()
        if ivr is not None:
            ivr.stop()
        await asterisk.stop()
        if not args.keep:
            asterisk.remove()
        await receiver.stop()
        await redis.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept: {workdir} and {asterisk.instance_dir}")
    return 0


@dataclass
class Calls:
    """What every call did: its IVR path, told apart by the number on its contact record."""

    by_number: dict[str, list[e.PathEvent]]
    path_of: dict[str, Any]
    outcome_of: dict[str, tuple[str, e.IncidentOutcome] | None]
    unmatched: int

    @classmethod
    async def read(cls, client: aioredis.Redis, keys: Keys) -> Calls:
        paths = await callpath.recent_paths(client, keys, "hotline", 0)
        contacts = await asyncio.gather(*(contact_store.get_contact(client, keys, contact_id_of_call(keys, p.call_id))
                                          for p in paths))
        by_number: dict[str, list[e.PathEvent]] = {}
        path_of: dict[str, Any] = {}
        for p, c in zip(paths, contacts, strict=True):
            if c is not None:
                number = c.number[-11:]  # national form, whatever the record's format
                by_number[number] = list(p.events)
                path_of[number] = p
        return cls(by_number, path_of, {n: e.incident_outcome(ev) for n, ev in by_number.items()},
                   sum(1 for c in contacts if c is None))

    def tally(self, group: Group) -> collections.Counter[str]:
        out: collections.Counter[str] = collections.Counter()
        for n in group.numbers:
            outcome = self.outcome_of.get(n)
            if n not in self.by_number:
                out["no path"] += 1
            elif outcome is None:
                out["menu (no announcement)"] += 1
            else:
                out[str(outcome[1])] += 1
        return out


@dataclass
class Told:
    """The resolve and the notices it scheduled."""

    resolve_status: int
    resolve_ms: float
    resolved: dict[str, Any]
    again: dict[str, Any]
    heard_set: set[str]
    whos: list[str]
    notices: list[Any]
    by_state: collections.Counter[str]
    due: list[float]
    settled: int
    repeated: int
    known: list[str]
    known_states: collections.Counter[str]
    told_all: bool
    told_s: float
    phone_result: SippResult | None


async def resolve_and_tell(args: argparse.Namespace, asterisk: LocalAsterisk, http: aiohttp.ClientSession, url: str,
                           client: aioredis.Redis, keys: Keys, subscribers: Group, asked_or_reported: set[str]) -> Told:
    """Resolve over REST with the customers' phone answering; wait until the known subscribers'
    notices settle; resolve again (nobody may be told twice); every notice of the incident."""
    incident_id = url.rsplit("/", 1)[1]
    known = [] if args.unknown_subscribers else [f"c-outage-{i:03d}" for i in range(len(subscribers.numbers))]
    phone = None
    if known:  # one SIPp UAS behind the `customers` trunk answers every notice call
        phone = await start_sipp("customer", local_port=asterisk.ports.customer_port,
                                 variables={"ring_ms": 300, "press": "-", "hold_ms": 3000},
                                 calls=len(known), timeout=180)
    t0 = time.monotonic()
    async with http.post(f"{url}/resolve", json={}) as resp:
        status, resolved = resp.status, await resp.json()
    resolve_ms = 1000 * (time.monotonic() - t0)
    store = NoticeStore(client, keys)
    known_ids = [notice_id(f"incident:{incident_id}:{c}") for c in known]

    async def all_settled() -> bool:
        found = await store.get_many(known_ids)
        return len(found) == len(known_ids) and all(n.state is not NoticeState.SCHEDULED for n in found)
    told_all = bool(await wait_for(all_settled, 150, interval=0.5)) if known else True
    told_s = time.monotonic() - t0  # from the resolve request
    await asyncio.sleep(5.0)  # webhooks poll; a second call to anyone would show by now
    async with http.post(f"{url}/resolve", json={}) as resp:  # again: nobody told twice
        again = await resp.json()
    await asyncio.sleep(2.0)
    phone_result = await phone.wait() if phone is not None else None
    heard_set = set(await client.smembers(keys.incident_heard(incident_id)))
    told = asked_or_reported | heard_set
    whos = sorted({(m.split("|", 1)[0] or "tel-" + m.split("|", 1)[1].lstrip("+")) for m in told})
    notices = await store.get_many(notice_id(f"incident:{incident_id}:{w}") for w in whos)
    now = time.time()
    by_state: collections.Counter[str] = collections.Counter()
    due: list[float] = []
    for n in notices:
        label = str(n.state)
        if n.due_at is not None and n.due_at > now + 60:
            label += ", due later"
            due.append(n.due_at)
        by_state[label + (f" ({n.reason})" if n.reason else "")] += 1
    return Told(
        resolve_status=status, resolve_ms=resolve_ms, resolved=resolved, again=again, heard_set=heard_set,
        whos=whos, notices=notices, by_state=by_state, due=due, settled=sum(1 for n in notices if n.outcomes),
        repeated=sum(1 for n in notices if len([o for o, _ in n.outcomes if o in ("heard", "pressed_1")]) > 1),
        known=known, known_states=collections.Counter(str(n.state) for n in await store.get_many(known_ids)),
        told_all=told_all, told_s=told_s, phone_result=phone_result)


async def run(args: argparse.Namespace, workdir: Path, asterisk: LocalAsterisk, ast_pid: int, ivr: IvrProcess,
              client: aioredis.Redis, receiver: SignedReceiver, settings_path: Path) -> None:
    keys = Keys(prefix=PREFIX)
    policy = incident_policy.load(workdir / "incidents.yaml")
    api = f"http://127.0.0.1:{ivr.web_port}/api/v1/incidents"
    http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {NOC_TOKEN}"})
    load_start = loadavg()
    cpu: dict[str, Cpu] = {}

    def mark() -> tuple[float, float]:
        return cpu_seconds(ivr.pid), cpu_seconds(ast_pid)

    def took(phase: str, since: tuple[float, float]) -> None:
        now = mark()
        cpu[phase] = Cpu(now[0] - since[0], now[1] - since[1])

    try:
        agi0 = await asyncio.to_thread(metric_total, ivr.web_port, "ivrserver_agi_calls_total")
        # ---- wave 1: the reporters
        reporters = Group("wave1", [CHAOYANG.format(i) for i in range(args.reporters)], FAULT_DIGITS, WAVE1_HOLD_MS)
        print(f"== wave 1: {args.reporters} Chaoyang callers report a mobile-data fault at {args.rate:g}/s ...",
              flush=True)
        t = mark()
        await run_group(asterisk, workdir, reporters, args.rate)
        took("wave 1", t)
        await asyncio.sleep(2.0)  # the last calls' end-of-call scripts

        async def active() -> list[str]:
            return list(await client.hkeys(keys.incidents_active()))
        ids = await wait_for(active, 10)
        async with http.get(api, params={"limit": "50"}) as resp:
            listed = (await resp.json())
        all_incidents = listed.get("incidents", listed) if isinstance(listed, dict) else listed
        if not ids:
            print("no incident opened: nothing more to measure")
            print(f"   wave 1: {reporters.result.describe() if reporters.result else 'no result'}"[:3000])
            return
        incident_id = ids[0]
        print(f"   incident {incident_id} active; {len(all_incidents)} incident(s) listed", flush=True)

        # ---- the back office takes it: acknowledged, an expected fix time (the announcement says it)
        fix_at = time.time() + 2 * 3600
        async with http.post(f"{api}/{incident_id}/acknowledge") as resp:
            ack_status = resp.status
        async with http.patch(f"{api}/{incident_id}", json={"cause": "fibre cut", "expected_fix_at": fix_at}) as resp:
            patch_status = resp.status
            patched = inc.from_dict(await resp.json())
        played = await offer_seconds(settings_path, patched, policy)
        await asyncio.sleep(3 * policy.interval_seconds + 0.5)  # the renderers of the new revision
        heard_hold = int(played * 1000) + 1000  # after the 1 s pause: hang up 2 s after the offer ends

        # ---- wave 2: Chaoyang and Beijing at the same time
        half, bhalf = args.chaoyang // 2, args.beijing // 2
        base = args.reporters + 100
        cy_sub = Group("chaoyang-press1", [CHAOYANG.format(base + i) for i in range(half)], "1", WAVE1_HOLD_MS)
        cy_heard = Group("chaoyang-listen", [CHAOYANG.format(base + half + i) for i in range(args.chaoyang - half)],
                         "", heard_hold)
        bj_sub = Group("beijing-press1", [BEIJING.format(i) for i in range(bhalf)], "1", WAVE1_HOLD_MS)
        bj_heard = Group("beijing-listen", [BEIJING.format(bhalf + i) for i in range(args.beijing - bhalf)],
                         "", heard_hold)
        if not args.unknown_subscribers:  # customers who allow calls at any hour: told at once
            for i, n in enumerate(cy_sub.numbers):
                await customers.save_customer(client, keys, Customer(
                    id=f"c-outage-{i:03d}", name=f"Subscriber {i}", phones=(f"+86{n}",), preferences=ALL_DAY))
        print(f"== wave 2: {args.chaoyang} Chaoyang + {args.beijing} Beijing callers (announcement and offer "
              f"{played:.1f} s; listeners hang up 2 s after it) ...", flush=True)
        t = mark()

        async def sequence(groups: list[Group], info: bool) -> None:
            for g in groups:
                if g.numbers:
                    await run_group(asterisk, workdir, g, args.rate, info=info)
        await asyncio.gather(sequence([cy_sub, cy_heard], False), sequence([bj_sub, bj_heard], True))
        took("wave 2", t)
        await asyncio.sleep(2.0)
        agi = int(await asyncio.to_thread(metric_total, ivr.web_port, "ivrserver_agi_calls_total") - agi0)

        calls = await Calls.read(client, keys)
        by_number, outcome_of, path_of = calls.by_number, calls.outcome_of, calls.path_of
        fault_path = sum(1 for n in reporters.numbers if n in by_number and any(
            ev.kind is e.PathKind.REPORTED for ev in by_number[n]))
        offered = sorted((path_of[n].started_at, n) for n in reporters.numbers
                         if n in by_number and outcome_of[n] is not None)
        incident = inc.from_dict(await (await http.get(f"{api}/{incident_id}")).json())
        subscribers = await client.smembers(keys.incident_subscribers(incident_id))

        # ---- detection: the complaint that crossed min_count
        callers = await client.zrange(keys.incident_callers("mobile_data", AREA), 0, -1, withscores=True)
        crossing = callers[policy.min_count - 1][1] if len(callers) >= policy.min_count else None
        counted_at_open = sum(1 for _, s in callers if s <= incident.opened_at)

        # ---- resolve: the notices, the customers' phones, resolve again
        t = mark()
        told = await resolve_and_tell(args, asterisk, http, f"{api}/{incident_id}", client, keys, cy_sub,
                                      {*subscribers, *[m for m, _ in callers]})
        took("resolve", t)
        final = inc.from_dict(await (await http.get(f"{api}/{incident_id}")).json())
    finally:
        await http.close()

    # ---- the table
    load_end = loadavg()
    zone = zoneinfo.ZoneInfo("Asia/Shanghai")
    local = datetime.datetime.now(zone).strftime("%H:%M")
    figures = dict(final.figures)
    bodies = list(receiver.accepted.values())  # one per Idempotency-Key
    orders = [b for b in bodies if b.get("event") == "incident.opened"]
    order_at = min((h["at"] for h in receiver.hits if h["body"].get("event") == "incident.opened"), default=0.0)
    wave2 = [cy_sub, cy_heard, bj_sub, bj_heard]
    all_groups = [reporters, *wave2]
    total_calls = sum(len(g.numbers) for g in all_groups)
    failed = sum(g.failed for g in all_groups)
    ivr_cpu = sum(c.ivr for c in cpu.values())
    ast_cpu = sum(c.ast for c in cpu.values())

    def tallied(g: Group) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(calls.tally(g).items())) or "-"

    print()
    print(f"Simulated outage through Asterisk 22 (SIPp → Asterisk → ivrserver, shipped incidents policy: "
          f"min_count {policy.min_count}, ratio {policy.ratio:g}, window {policy.window_seconds} s, detector "
          f"interval {policy.interval_seconds:g} s); {os.cpu_count()} cores shared with other engineers' runs "
          f"(load average {load_start} at start, {load_end} at end); Chaoyang local time {local}.")
    rows = [
        ("incidents opened", f"{len(all_incidents)}", "expect 1"),
        ("wave 1 reporters (3 4 1)", f"{len(reporters.numbers)} at {args.rate:g}/s, {reporters.failed} failed",
         f"{fault_path} took the fault path (complaint counted); {len(offered)} were offered the announcement "
         f"first, their '3' took them: " + (", ".join(f"{k} {v}" for k, v in sorted(collections.Counter(
             str(outcome_of[n][1]) for _, n in offered).items())) or "-") + " (menu: on to the menu's faults)"),
        ("complaints counted (callers set)", f"{len(callers)}",
         f"{counted_at_open} by opened_at; incident counts at open: window {incident.counts.get('window')}, "
         f"baseline {incident.counts.get('baseline')}"),
        ("opened at complaint #", f"{policy.min_count}" if crossing else "-",
         f"min_count {policy.min_count}: the {policy.min_count}th complaint by its own time"),
        ("detection latency", f"{1000 * (incident.opened_at - crossing):.0f} ms" if crossing else "-",
         "from the min_count-th complaint's time (callers zset score) to opened_at"),
        ("time_to_detect (archived)", f"{figures.get('time_to_detect_seconds')} s",
         "the code's figure: from the FIRST complaint (first_report_at) to opened_at"),
        ("first caller offered it", f"+{offered[0][0] - incident.opened_at:.2f} s" if offered else "-",
         "after opened_at (that call's start; announcement rendered by then)"),
        ("work orders (incident.opened)", f"{len(orders)}",
         f"expect 1; all webhook events kept: {dict(collections.Counter(b['event'] for b in bodies))}, "
         f"{receiver.bad_signatures} bad signatures, repeats of a key: "
         f"{len(receiver.hits) - len(bodies)}; "
         f"delivered +{order_at - incident.opened_at:.2f} s after opened_at" if orders else "-"),
        ("back office", f"ack {ack_status}, patch {patch_status}, resolve {told.resolve_status}",
         f"resolve answered in {told.resolve_ms:.0f} ms"),
        ("wave 2 Chaoyang press 1", f"{len(cy_sub.numbers)}, {cy_sub.failed} failed", tallied(cy_sub)),
        ("wave 2 Chaoyang listen", f"{len(cy_heard.numbers)}, {cy_heard.failed} failed", tallied(cy_heard)),
        ("wave 2 Beijing press 1", f"{len(bj_sub.numbers)}, {bj_sub.failed} failed",
         tallied(bj_sub) + " (expect menu)"),
        ("wave 2 Beijing listen", f"{len(bj_heard.numbers)}, {bj_heard.failed} failed",
         tallied(bj_heard) + " (expect menu)"),
        ("subscribed (Redis set)", f"{len(subscribers)}", f"expect {len(cy_sub.numbers)}"),
        ("offered the announcement", f"{len(told.heard_set)}",
         "incident 'heard' set: everyone offered it, any outcome"),
        ("notices at resolve",
         f"scheduled {told.resolved.get('notices_scheduled')}, refused {told.resolved.get('notices_refused')}",
         f"{len(told.whos)} distinct callers to tell (asked | offered | reported); "
         f"records found {len(told.notices)}"),
        ("notices by state", ", ".join(f"{k} {v}" for k, v in sorted(told.by_state.items())) or "-",
         (f"due {hms(min(told.due))}-{hms(max(told.due))} UTC, {len(set(map(int, told.due)))} distinct "
          f"second(s); " if told.due else "") + f"{told.settled} with an outcome during the run"),
        ("subscribers told (customers)",
         ", ".join(f"{k} {v}" for k, v in sorted(told.known_states.items())) or "- (--unknown-subscribers)",
         (f"{len(told.known)} with customer records allowing calls at any hour: all answered "
          f"{'within' if told.told_all else 'NOT within'} {told.told_s:.1f} s of the resolve request "
          f"(heard = answered); "
          f"customers' phone (SIPp UAS) "
          f"answered {told.phone_result.successful if told.phone_result else 0}, "
          f"failed {told.phone_result.failed if told.phone_result else 0}; "
          f"notices heard more than once: {told.repeated}; "
          f"second resolve: scheduled {told.again.get('notices_scheduled')}, "
          f"refused {told.again.get('notices_refused')}") if told.known else ""),
        ("archived figures", f"absorbed {figures.get('calls_absorbed')}", ", ".join(
            f"{k.removeprefix('calls_')} {v}" for k, v in figures.items() if k != "calls_absorbed")),
        ("SIPp calls", f"{total_calls}, {failed} failed", f"ivrserver served {agi} AGI calls; paths without a "
                                                           f"contact record: {calls.unmatched}"),
        ("CPU ivrserver / Asterisk", f"{ivr_cpu:.1f} s / {ast_cpu:.1f} s",
         f"ratio {ivr_cpu / ast_cpu:.2f}; per call {1000 * ivr_cpu / max(1, total_calls):.1f} / "
         f"{1000 * ast_cpu / max(1, total_calls):.1f} ms; " + "; ".join(
             f"{k} {v.ivr:.1f}/{v.ast:.1f} s" for k, v in cpu.items())),
    ]
    widths = [max(len(r[i]) for r in rows) for i in (0, 1)]
    for r in rows:
        print(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}".rstrip())
    errors = [ln for ln in ivr.log.read_text(errors="replace").splitlines() if " ERROR " in ln]
    print(f"ivrserver log: {len(errors)} ERROR lines" + (f", first: {errors[0][:200]}" if errors else ""))
    for g in all_groups:
        if g.failed and g.result is not None:
            kinds = sorted(set(re.findall(r"(Aborting call[^\n]{0,60}|unexpected [^\n]{0,60})", g.result.errors)))[:3]
            print(f"   {g.name}: {g.failed} failed: {'; '.join(kinds) or g.result.output[-300:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reporters", type=int, default=300, help="wave 1: Chaoyang callers reporting the fault")
    parser.add_argument("--rate", type=float, default=20.0, help="calls per second of every SIPp run")
    parser.add_argument("--chaoyang", type=int, default=60, help="wave 2: Chaoyang callers (half press 1)")
    parser.add_argument("--beijing", type=int, default=20, help="wave 2: Beijing callers (half press 1)")
    parser.add_argument("--unknown-subscribers", action="store_true",
                        help="the wave-2 callers who press 1 have no customer record either (told at their number "
                             "within 09:00-20:00 Chaoyang time, like the reporters); default: customers whose "
                             "preferences allow calls at any hour, whose notices ring the customers' SIPp phone")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--keep", action="store_true", help="keep logs and the Asterisk instance directory")
    args = parser.parse_args(argv)
    if shutil.which("sipp") is None:
        print("sipp is not installed (apt-get install sip-tester); skipping the outage bench")
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
