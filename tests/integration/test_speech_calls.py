"""A real call hears a synthesized Mandarin prompt: SIPp caller → Asterisk 22 → ivrserver.

The menu is written as text; ivrserver renders it with espeak-ng + sox into a cache directory
under the chroot's sounds directory (so Asterisk finds it by a sounds-relative name). With AGI
debug on, Asterisk's own log shows the STREAM FILE of that clip and its reply: a non-zero end
position means Asterisk opened the file and played it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
import shutil
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivrserver.config import IncidentSettings, PromptSettings
from ivrserver.devstack.asterisk import LocalAsterisk
from tests.integration.conftest import Phones
from tests.integration.test_ivrserver_calls import ivr_settings, running, url_of

pytestmark = pytest.mark.integration

MENU = """\
language: zh
human: {queue: general}
entry: {open: main}
nodes:
  main:
    type: play
    prompts:
      - {text: "您好，余额查询请按1", lang: zh}
    next: {hangup: true, play: [{text: {zh: "再见", en: "Goodbye"}}]}
"""


async def test_a_real_call_plays_a_synthesized_mandarin_prompt_and_a_reload_renders_one_file(
        fresh_asterisk: LocalAsterisk, phones: Phones, redis_client: aioredis.Redis, tmp_path: Path) -> None:
    settings = ivr_settings(fresh_asterisk, url_of(redis_client), tmp_path)
    (tmp_path / "menus" / "hotline.yaml").write_text(MENU, encoding="utf-8")
    cache = fresh_asterisk.sounds_dir / f"ivrserver-test-{secrets.token_hex(4)}"
    # incidents off: the detector renders its fixed offer/thanks texts into the same cache at start
    # (in the background), which this file count is not about (tests/integration/test_incident_calls.py)
    settings = dataclasses.replace(settings, prompts=PromptSettings(cache_dir=str(cache)),
                                   incidents=IncidentSettings(enabled=False))
    await fresh_asterisk.cli("agi set debug on")
    try:
        async with running(settings) as server:
            version = server.menus.current
            clip = version.menu("hotline").clips[("您好，余额查询请按1", "zh")]
            assert clip == f"{cache.name}/{Path(clip).name}"  # relative to the sounds dir Asterisk reads
            before = {p.name for p in cache.glob("*.sln")}
            assert len(before) == 3  # the prompt, and "goodbye" in zh and en

            offset = fresh_asterisk.full_log.stat().st_size
            result = await phones.call("", number="15550077")
            assert result.ok, result.describe()

            # a reload that changes one text renders exactly one new file
            server.menus.speech.rendered.clear()  # type: ignore[union-attr]
            (tmp_path / "menus" / "hotline.yaml").write_text(MENU.replace("再见", "感谢来电，再见"), encoding="utf-8")
            reloaded = server.menus.reload()
            assert reloaded.ok and reloaded.changed
            after = {p.name for p in cache.glob("*.sln")}
            assert len(after - before) == 1 and len(server.menus.speech.rendered) == 1  # type: ignore[union-attr]
    finally:
        await fresh_asterisk.cli("agi set debug off")
    with fresh_asterisk.full_log.open("rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", "replace")
    streamed = re.search(rf"AGI Rx << STREAM FILE \"?{re.escape(clip)}\"? .*\n(?:.*\n)*?"
                         r".*AGI Tx >> 200 result=0 endpos=(\d+)", text)
    assert streamed is not None, f"no STREAM FILE {clip} in {fresh_asterisk.full_log}"
    assert int(streamed[1]) > 0
    sox = await asyncio.create_subprocess_exec("sox", "--i", str(fresh_asterisk.sounds_dir / f"{clip}.sln"),
                                               stdout=asyncio.subprocess.PIPE)
    info = (await sox.communicate())[0].decode()
    assert sox.returncode == 0
    assert "Sample Rate    : 8000" in info and "Channels       : 1" in info and "16-bit Signed Integer PCM" in info
    shutil.rmtree(cache, ignore_errors=True)
