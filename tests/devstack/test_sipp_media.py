"""SIPp phones started back to back each get media ports of their own (devstack/sipp.py).

`make run` starts eleven SIPp phones one after the other. A SIPp binds its four media ports a few
milliseconds after it starts, so checking that ports are free did not see the previous phone's:
two phones could get overlapping blocks and the second died at start ("Unable to bind video RTP
socket … errno = 98") — an agent phone of `make run` missing, seen in CI. Real SIPp processes; the
media range is narrowed so that overlapping picks would be all but certain.
"""

from __future__ import annotations

import asyncio

import pytest

from ivrserver.devstack import sipp
from ivrserver.devstack.ports import StackPorts

pytestmark = pytest.mark.timeout(60)


async def test_phones_started_back_to_back_all_keep_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sipp, "MEDIA_PORT_RANGE", (32000, 32064))  # 32 even ports, 11 blocks of 4
    ports = StackPorts.free()
    local = [ports.agent_port(n) for n in range(1001, 1011)] + [ports.customer_port]
    phones = []
    try:
        for port in local:
            phones.append(await sipp.start_sipp("agent", local_port=port, calls=1,
                                                variables={"ring_ms": 100, "hold_ms": 100}, timeout=30))
        await asyncio.sleep(1.0)  # a SIPp that cannot bind exits within milliseconds
        dead = [(p.local_port, p.process.returncode) for p in phones if p.process.returncode is not None]
        assert dead == [], [(await p.wait()).describe() for p in phones if p.process.returncode is not None]
        blocks = [port for port, proc in sipp._MEDIA_BY_PORT.items() if any(proc is p.process for p in phones)]
        assert len(blocks) == len(phones)
        assert all(abs(a - b) >= sipp.MEDIA_PORTS for a in blocks for b in blocks if a != b), sorted(blocks)
    finally:
        for phone in phones:
            await phone.kill()
            await phone.wait()
    again = sipp._free_media_port()  # the blocks of phones that exited are free again
    sipp._MEDIA_BY_PORT.pop(again)
    assert not any(proc is p.process for proc in sipp._MEDIA_BY_PORT.values() for p in phones)
