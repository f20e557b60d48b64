"""Reminders on a real Redis with the real NoticeService (services/notices.py): the scanner fires
each rule once per (customer, rule, value) — also with two scanners at once —, a renewed card
cancels the pending notice of the old date before it dials, a saved customer is looked at without
waiting for the walk, and posted events fire once per event id.

The notices' messages are synthesized for real (espeak-ng + sox into tmp_path); every customer of a
walk gets the same text, so one file serves them all. No call is dialed here: the calls stay
scheduled in the real CallbackStore (tests/integration covers dialing).
"""

from __future__ import annotations

import asyncio
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivrserver.config import PromptSettings
from ivrserver.domain import reminders as rm
from ivrserver.domain.callbacks import CallbackPolicy
from ivrserver.domain.customer_validation import validate_customer
from ivrserver.domain.model import ContactPreferences, Customer
from ivrserver.domain.notices import NoticePolicy, NoticeState, notice_id
from ivrserver.files import reminders as rules_file
from ivrserver.metrics import Metrics
from ivrserver.services.customers import CustomerService
from ivrserver.services.messages import MessageService
from ivrserver.services.notices import NoticeService
from ivrserver.services.reminders import NoSuchCustomer, ReminderService, UnknownEvent
from ivrserver.services.speech import SpeechRenderer, Synthesizer, parse_voices
from ivrserver.store import customers
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.keys import Keys
from ivrserver.store.notices import NoticeStore
from ivrserver.store.reminders import ReminderStore
from tests.cli_harness import ivrserver, user_env

ALL_DAY = CallbackPolicy(calling_from="00:00", calling_until="24:00")
OPEN = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")
RULES = rules_file.parse("""
attributes:
  card_expiry:
    attribute: card_expires
    days_before: 30
    at: "10:00"
    kind: card_expiry
    channel: call
    text: {en: "Your card expires on {date}.", zh: "您的卡将于{date}到期。"}
events:
  roaming_welcome:
    event: roaming_started
    kind: roaming
    channel: call
    valid_hours: 24
    text: {en: "Welcome abroad!"}
  roaming_tips:
    event: roaming_started
    kind: roaming
    channel: call
    valid_hours: 2
    text: {en: "Data abroad costs the same."}
""")


def day(days: int) -> str:
    return (date.today() + timedelta(days=days)).isoformat()


class Env:
    def __init__(self, redis: aioredis.Redis, keys: Keys, tmp: Path) -> None:
        self.redis = redis
        self.keys = keys
        self.calls = CallbackStore(redis, keys)
        self.notice_store = NoticeStore(redis, keys)
        prompts = PromptSettings()
        renderer = SpeechRenderer(Synthesizer(prompts.synthesizer, prompts.convert), parse_voices(prompts.voices),
                                  tmp / "sounds")
        self.notices = NoticeService(self.notice_store, self.calls, MessageService(renderer), NoticePolicy(), ALL_DAY,
                                     customer=lambda cid: customers.get_customer(redis, keys, cid))
        self.store = ReminderStore(redis, keys, kept_seconds=3600)

    def scanner(self, instance: str = "a", *, interval: float = 3600.0, page_size: int = 7,
                horizon: float | None = None) -> ReminderService:
        return ReminderService(self.store, self.notices, RULES, instance=instance, interval=interval,
                               page_size=page_size, page_pause=0, horizon=horizon)

    async def customer(self, cid: str = "c1", card: str | None = None, **kw: object) -> Customer:
        attributes = {"notices": "card_expiry,roaming"}
        if card is not None:
            attributes["card_expires"] = card
        c = Customer(id=cid, name="Wang Fang", phones=("15550001",), preferences=OPEN, attributes=attributes, **kw)
        await customers.save_customer(self.redis, self.keys, c)
        return c

    async def state(self, key: str) -> NoticeState | None:
        found = await self.notice_store.get(notice_id(key))
        return found.state if found is not None else None

    async def calls_made(self) -> int:
        return int(await self.redis.zcard(self.keys.callback_index()))


@pytest.fixture
def env(redis_client: aioredis.Redis, keys: Keys, tmp_path: Path) -> Env:
    return Env(redis_client, keys, tmp_path)


async def test_two_scanners_fire_each_rule_once_per_customer(env: Env) -> None:
    expires = day(90)
    for n in range(30):
        await env.customer(f"c{n:02d}", card=expires)
    await env.customer("c-no-card")
    await env.customer("c-bad-card", card="31/12/2030")
    a, b = env.scanner("a"), env.scanner("b")
    for _ in range(3):  # both walk at once, three times (force: past the one-walk-per-interval lease)
        stats = await asyncio.gather(a.scan_once(force=True), b.scan_once(force=True))
        assert all(s.failed == 0 for s in stats)
    for n in range(30):
        assert await env.state(rm.reminder_key("card_expiry", f"c{n:02d}", expires)) is NoticeState.SCHEDULED
    assert await env.calls_made() == 30  # one call per customer: no notice created twice
    handled = await env.store.handled(["c00", "c-no-card", "c-bad-card"])
    assert handled == {"c00": {"card_expiry": expires}, "c-no-card": {}, "c-bad-card": {"card_expiry": "31/12/2030"}}


async def test_one_walk_per_interval_across_instances(env: Env) -> None:
    await env.customer("c1", card=day(90))
    metrics = Metrics()
    walker = env.scanner("a")
    walker.metrics = metrics
    first = await walker.scan_once()
    second = await env.scanner("b").scan_once()
    assert (first.walked, first.customers, first.scheduled) == (True, 1, 1)
    assert (second.walked, second.customers) == (False, 0)
    assert await env.store.extend_scan("a", 60) and not await env.store.extend_scan("b", 60)  # a long walk keeps it
    assert metrics.registry.get_sample_value("ivrserver_reminders_total", {"result": "scheduled"}) == 1.0


async def test_a_renewed_card_cancels_the_old_dates_notice_before_it_dials(env: Env) -> None:
    old, new = day(90), day(400)
    await env.customer("c1", card=old)
    scanner = env.scanner()
    await scanner.scan_once(force=True)
    assert await env.state(rm.reminder_key("card_expiry", "c1", old)) is NoticeState.SCHEDULED
    await env.customer("c1", card=new)  # the bank renewed the card
    stats = await scanner.scan_once(force=True)
    assert (stats.cancelled, stats.scheduled) == (1, 1)
    assert await env.state(rm.reminder_key("card_expiry", "c1", old)) is NoticeState.CANCELLED
    assert await env.state(rm.reminder_key("card_expiry", "c1", new)) is NoticeState.SCHEDULED
    # the old date's call is cancelled too: it will never dial
    old_notice = await env.notice_store.get(notice_id(rm.reminder_key("card_expiry", "c1", old)))
    assert old_notice is not None and old_notice.call_id is not None
    cb = await env.calls.get(old_notice.call_id)
    assert cb is not None and cb.state.value == "cancelled"
    # a walk with nothing changed does nothing
    again = await scanner.scan_once(force=True)
    assert (again.cancelled, again.scheduled) == (0, 0)
    # the attribute removed: the pending notice is cancelled and the rule forgotten
    await env.customer("c1")
    gone = await scanner.scan_once(force=True)
    assert gone.cancelled == 1
    assert await env.state(rm.reminder_key("card_expiry", "c1", new)) is NoticeState.CANCELLED
    assert (await env.store.handled(["c1"]))["c1"] == {}


async def test_a_reminder_is_scheduled_once_it_is_due_within_the_horizon(env: Env) -> None:
    soon, far = day(31), day(60)  # due in ~1 day and in ~30 days (30 days before each date)
    await env.customer("c-soon", card=soon)
    await env.customer("c-far", card=far)
    scanner = env.scanner(horizon=2 * 86400)
    stats = await scanner.scan_once(force=True)
    assert stats.scheduled == 1
    assert await env.state(rm.reminder_key("card_expiry", "c-soon", soon)) is NoticeState.SCHEDULED
    assert await env.state(rm.reminder_key("card_expiry", "c-far", far)) is None  # a later walk
    assert (await env.store.handled(["c-far"]))["c-far"] == {}
    # renewed to a far date: the pending notice is cancelled now, the new one waits for its time
    await env.customer("c-soon", card=far)
    stats = await scanner.scan_once(force=True)
    assert (stats.cancelled, stats.scheduled) == (1, 0)
    assert await env.state(rm.reminder_key("card_expiry", "c-soon", soon)) is NoticeState.CANCELLED
    assert (await env.store.handled(["c-soon"]))["c-soon"] == {}
    again = await scanner.scan_once(force=True)
    assert (again.cancelled, again.scheduled) == (0, 0)


async def test_an_expired_card_calls_for_nothing(env: Env) -> None:
    await env.customer("c1", card=day(-1))
    stats = await env.scanner().scan_once(force=True)
    assert (stats.scheduled, stats.skipped) == (0, 1)
    assert await env.calls_made() == 0


async def test_a_saved_customer_is_looked_at_without_waiting_for_the_walk(env: Env) -> None:
    service = CustomerService(env.redis, env.keys)
    scanner = env.scanner(interval=3600)
    service.on_saved.append(scanner.customer_changed)
    task = asyncio.create_task(scanner.run())
    try:
        await asyncio.sleep(0.2)  # the first walk (no customers yet)
        item, errors = validate_customer({"id": "c9", "name": "Li Wei", "phones": ["15550009"],
                                  "preferences": {"timezone": "UTC", "allowed_from": "00:00", "allowed_until": "24:00"},
                                  "attributes": {"card_expires": day(60), "notices": "card_expiry"}})
        assert item is not None and not errors
        await service.create(item)
        key = rm.reminder_key("card_expiry", "c9", day(60))
        deadline = time.monotonic() + 20
        while await env.state(key) is None:
            assert time.monotonic() < deadline, "the saved customer's reminder was not scheduled"
            await asyncio.sleep(0.05)
        assert await env.state(key) is NoticeState.SCHEDULED
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_posted_event_fires_each_rule_once_per_event_id(env: Env) -> None:
    await env.customer("c1")
    scanner = env.scanner()
    now = time.time()
    results = await asyncio.gather(*(scanner.post_event("c1", "roaming_started", "evt-1", now) for _ in range(4)))
    by_rule: dict[str, list[str]] = {}
    for fired in (f for result in results for f in result):
        by_rule.setdefault(fired.rule, []).append(fired.status)
    for rule, statuses in by_rule.items():
        assert sorted(statuses).count("scheduled") == 1, (rule, statuses)  # once; the others existing
        assert set(statuses) <= {"scheduled", "existing"}
    # one notice per rule, both carried by one call (the notice service batches a customer's notices)
    assert await env.state(rm.reminder_key("roaming_welcome", "c1", "evt-1")) is NoticeState.SCHEDULED
    assert await env.state(rm.reminder_key("roaming_tips", "c1", "evt-1")) is NoticeState.SCHEDULED
    assert await env.calls_made() == 1
    # later, the same id again: nothing more
    again = await scanner.post_event("c1", "roaming_started", "evt-1", now)
    assert [f.status for f in again] == ["existing", "existing"]


async def test_an_old_event_is_skipped_by_the_rules_it_is_too_old_for(env: Env) -> None:
    await env.customer("c1")
    fired = await env.scanner().post_event("c1", "roaming_started", "evt-2", time.time() - 3 * 3600)
    assert {f.rule: f.status for f in fired} == {"roaming_welcome": "scheduled", "roaming_tips": "skipped"}


async def test_unknown_event_and_unknown_customer(env: Env) -> None:
    await env.customer("c1")
    with pytest.raises(UnknownEvent) as err:
        await env.scanner().post_event("c1", "roaming_stopped", "evt-3", time.time())
    assert err.value.known == ("roaming_started",)
    with pytest.raises(NoSuchCustomer):
        await env.scanner().post_event("nobody", "roaming_started", "evt-3", time.time())


async def test_customers_imported_from_a_file_get_their_reminder_once(env: Env, redis_url: str,
                                                                      tmp_path: Path) -> None:
    """The bank's nightly file through `ivrserver customers import` (the real console script, the
    test Redis): each card is reminded once, however often the file is imported again; a renewed
    card in the next file cancels the old date's notice and schedules the new one."""
    old, new = day(90), day(400)

    def import_file(card_c2: str) -> None:
        path = tmp_path / "cards.yaml"
        path.write_text("customers:\n" + "".join(
            f"  - id: {cid}\n    name: Card Holder\n    phones: [\"+861390000000{n}\"]\n"
            f"    preferences: {{timezone: UTC, allowed_from: \"00:00\", allowed_until: \"24:00\"}}\n"
            f"    attributes: {{card_expires: \"{card}\", notices: card_expiry}}\n"
            for n, (cid, card) in enumerate((("c1", old), ("c2", card_c2)), start=1)))
        result = ivrserver("customers", "import", str(path),
                           env=user_env(redis_url, IVRSERVER_REDIS__PREFIX=env.keys.prefix))
        assert result.returncode == 0, result.stderr
        assert "imported 2 customer(s)" in result.stdout

    scanner = env.scanner()
    import_file(old)
    await scanner.scan_once(force=True)
    import_file(old)  # the same file again
    stats = await scanner.scan_once(force=True)
    assert (stats.scheduled, stats.cancelled) == (0, 0)
    for cid in ("c1", "c2"):
        assert await env.state(rm.reminder_key("card_expiry", cid, old)) is NoticeState.SCHEDULED
    assert await env.calls_made() == 2

    import_file(new)  # c2's card renewed
    stats = await scanner.scan_once(force=True)
    assert (stats.scheduled, stats.cancelled) == (1, 1)
    assert await env.state(rm.reminder_key("card_expiry", "c2", old)) is NoticeState.CANCELLED
    assert await env.state(rm.reminder_key("card_expiry", "c2", new)) is NoticeState.SCHEDULED
    assert await env.state(rm.reminder_key("card_expiry", "c1", old)) is NoticeState.SCHEDULED
