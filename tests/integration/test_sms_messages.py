"""SMS through Asterisk on a real PBX: Asterisk 22 (res_pjsip_messaging, AMI MessageSend) + a SIPp
phone behind the `customers` trunk (tests/sipp/sms_phone.xml answers each SIP MESSAGE 200 OK and
logs it) + Redis + ivrserver.

- SmsService over AmiMessageSender: a Mandarin text reaches the phone byte for byte, once per key
  however often (and however concurrently) it is sent; another key is another message; From is
  the hotline, the Request-URI carries the customer's number.
- The whole path in an in-process IvrServer: a back office posts roaming_started over REST → the
  reminders rule → the notice service (channel sms) → the SMS service → Asterisk → the phone,
  once, in the customer's language.
- A MESSAGE sent *to* Asterisk (to the hotline) is refused 404 and runs no dialplan: no channel.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from ivrserver import config
from ivrserver.config import AmiSettings
from ivrserver.devstack.asterisk import LocalAsterisk
from ivrserver.devstack.sipp import start_sipp
from ivrserver.domain.model import ContactPreferences, Customer
from ivrserver.pbx.ami import AmiClient
from ivrserver.pbx.messaging import AmiMessageSender
from ivrserver.services.sms import SmsService
from ivrserver.store.keys import Keys
from ivrserver.store.sms import SmsMarkers
from ivrserver.web.backoffice import digest
from tests.integration import test_callback_calls as cbc
from tests.integration.test_ivrserver_calls import running

pytestmark = pytest.mark.integration

stack = cbc.stack
watch = cbc.watch

TEXT = "您的卡将于2027年1月31日到期。新卡正在寄出，如地址有变请致电1860。"
OTHER = "Your card expires on 31 January 2027."
NUMBER = "+8613812345678"
TOKEN = "roam-" + "4f4f4f" * 8


def destination(pbx: LocalAsterisk) -> str:
    return f"pjsip:customers/sip:{{number}}@127.0.0.1:{pbx.ports.customer_port}"


def sms_lines(logs: str) -> list[str]:
    return [line for line in logs.splitlines() if line.startswith("SMS MESSAGE ")]


async def test_a_mandarin_sms_reaches_the_phone_once_per_key(fresh_asterisk: LocalAsterisk,
                                                             redis_client: aioredis.Redis) -> None:
    pbx = fresh_asterisk
    ami = AmiClient(AmiSettings(host="127.0.0.1", port=pbx.ports.ami_port, secret=pbx.ami_secret, ping_interval=1.0,
                                silence_timeout=6.0, reconnect_max_delay=1.0))
    await ami.start()
    try:
        assert await ami.wait_logged_in(10)
        # the phone waits for up to 3 messages for 8 s: exactly 2 must come
        phone = await start_sipp("sms_phone", local_port=pbx.ports.customer_port, calls=3, timeout=8)
        await asyncio.sleep(0.3)
        sms = SmsService(SmsMarkers(redis_client, Keys("smsit"), kept_seconds=600),
                         AmiMessageSender(ami, destination=destination(pbx), sender="1860"))
        first = await asyncio.gather(*(sms.send(number=NUMBER, text=TEXT, key="reminder:card:c1:2027-01-31")
                                       for _ in range(4)))
        assert first.count("sent") >= 1 and set(first) <= {"sent", "failed:in_progress"}, first
        assert await sms.send(number=NUMBER, text=TEXT, key="reminder:card:c1:2027-01-31") == "sent"  # recorded
        assert await sms.send(number="15550001", text=OTHER, key="other-key") == "sent"
        result = await phone.wait()
    finally:
        await ami.close()
    assert result.successful == 2, result.describe()  # the third never came
    lines = sms_lines(result.logs)
    assert len(lines) == 2, result.logs
    mandarin = next(line for line in lines if NUMBER in line)
    assert f"MESSAGE sip:{NUMBER}@127.0.0.1:{pbx.ports.customer_port}" in mandarin
    assert "<sip:1860@" in mandarin
    assert f"body=<<{TEXT}>>" in mandarin  # every UTF-8 byte intact
    assert f"body=<<{OTHER}>>" in next(line for line in lines if "15550001" in line)


async def test_a_posted_roaming_event_texts_the_customer_once(stack: cbc.Stack, tmp_path: Path) -> None:
    pbx = stack.asterisk
    await stack.add_customer(Customer(
        id="c-roam-1", name="孙权", phones=(NUMBER,), language="zh", attributes={"notices": "roaming"},
        preferences=ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")))
    tokens = tmp_path / "backoffice-tokens.yaml"
    tokens.write_text(f'roaming: {{digest: "{digest(TOKEN)}", scopes: [events]}}\n')
    mapping = stack.settings("it-sms")
    mapping["web"] = {**mapping["web"], "backoffice_tokens_file": str(tokens)}
    mapping["sms"] = {"transport": "asterisk", "destination": destination(pbx)}
    phone = await start_sipp("sms_phone", local_port=pbx.ports.customer_port, calls=2, timeout=10)
    async with running(config.from_mapping(mapping)) as server, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{server.web_port}/api/v1/customers/c-roam-1/events"
        body = {"event": "roaming_started", "id": "roam-8841", "at": time.time()}
        statuses = []
        for _ in range(3):  # the back office retries: one SMS
            async with http.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                assert resp.status == 202, await resp.text()
                statuses.append((await resp.json())["reminders"][0]["status"])
        assert statuses == ["sms_sent", "existing", "existing"]
        result = await phone.wait()
    assert result.successful == 1, result.describe()
    [line] = sms_lines(result.logs)
    assert "body=<<孙权，欢迎出境！" in line and f"sip:{NUMBER}@" in line


async def test_a_message_to_the_hotline_is_refused_and_runs_no_dialplan(fresh_asterisk: LocalAsterisk,
                                                                        watch: cbc.AmiWatch) -> None:
    pbx = fresh_asterisk
    sender = await start_sipp("sms_sender", local_port=pbx.ports.caller_port, remote=f"127.0.0.1:{pbx.ports.sip_port}",
                              service="1860", timeout=10)
    result = await sender.wait()
    assert result.ok, result.describe()  # 404 Not Found
    await asyncio.sleep(0.5)
    assert watch.channels("") == [], "a dialplan ran for the MESSAGE"
