"""Fixtures of the browser tests: Chromium, and for the pages on real calls the module's own
Asterisk (instance `pytest-<pid>-<module>`, never tests/integration's session one) and its phones."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser

from ivrserver.devstack.asterisk import LocalAsterisk
from tests.browser.pages import chromium
from tests.integration.conftest import Phones, idle, local_asterisk, phones_on


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pbx(request: pytest.FixtureRequest) -> AsyncIterator[LocalAsterisk]:
    module = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    async with local_asterisk(f"pytest-{os.getpid()}-{module}") as asterisk:
        yield asterisk


@pytest.fixture
async def phones(pbx: LocalAsterisk) -> AsyncIterator[Phones]:
    async with phones_on(await idle(pbx)) as p:
        yield p
