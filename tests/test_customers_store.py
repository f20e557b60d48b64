"""Customer store against the real Redis: indexes, snapshot in one round trip, PIN lockout."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

import pytest
import redis.asyncio as aioredis

from ivrserver.domain import customer_validation as cv
from ivrserver.domain import identification
from ivrserver.domain.identification import Locked, LockoutPolicy
from ivrserver.domain.model import Case, CaseStatus, Contact, ContactKind, Customer, Outcome, Tier
from ivrserver.services.customers import identify_by_account
from ivrserver.store import cases, contacts
from ivrserver.store import customers as store
from ivrserver.store.keys import Keys
from tests.conftest import TEST_PEPPER

identify = functools.partial(identify_by_account, pepper=TEST_PEPPER)  # the flow is a use case now

NOW = float(int(time.time()))
PIN = "4321"


def customer(cid: str = "c1", **kw: object) -> Customer:
    base = Customer(id=cid, name="Wang Lei", phones=("15550001", "+4930123"), tier=Tier.VIP,
                    account_manager="agent1001", account_number="80010001",
                    pin_hash=identification.hash_pin(PIN, b"salt-for-tests!!", TEST_PEPPER),
                    attributes={"balance": "12.50"})
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


async def test_save_get_round_trip_and_indexes(redis_client: aioredis.Redis, keys: Keys) -> None:
    c = customer()
    await store.save_customer(redis_client, keys, c)
    assert await store.get_customer(redis_client, keys, "c1") == c
    assert await store.customer_ids_for_phone(redis_client, keys, "15550001") == ["c1"]
    assert await store.customer_ids_for_phone(redis_client, keys, "+4930123") == ["c1"]
    assert await store.account_owner(redis_client, keys, "80010001") == "c1"
    assert await redis_client.type(keys.customer("c1")) == "string"


async def test_update_moves_phone_and_account_indexes(redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save_customer(redis_client, keys, customer())
    await store.save_customer(redis_client, keys, customer(phones=("15550009",), account_number="80019999"),
                              mode="update")
    assert await store.customer_ids_for_phone(redis_client, keys, "15550001") == []
    assert not await redis_client.exists(keys.phone("15550001"))
    assert await store.customer_ids_for_phone(redis_client, keys, "15550009") == ["c1"]
    assert await store.account_owner(redis_client, keys, "80010001") is None
    assert await store.account_owner(redis_client, keys, "80019999") == "c1"


async def test_modes_and_conflicts(redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save_customer(redis_client, keys, customer(), mode="create")
    with pytest.raises(store.CustomerExists):
        await store.save_customer(redis_client, keys, customer(), mode="create")
    with pytest.raises(store.CustomerNotFound):
        await store.save_customer(redis_client, keys, customer("c2"), mode="update")
    with pytest.raises(store.AccountInUse) as info:
        await store.save_customer(redis_client, keys, customer("c2", phones=("15550002",)))
    assert info.value.owner == "c1" and "80010001" not in str(info.value)
    assert await store.get_customer(redis_client, keys, "c2") is None


async def test_shared_phone_lists_both(redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save_customer(redis_client, keys, customer("c1", account_number=None, pin_hash=None))
    await store.save_customer(redis_client, keys, customer("c2", account_number=None, pin_hash=None,
                                                           phones=("15550001",)))
    assert await store.customer_ids_for_phone(redis_client, keys, "15550001") == ["c1", "c2"]


async def test_list_paging_and_delete(redis_client: aioredis.Redis, keys: Keys) -> None:
    for i in range(5):
        await store.save_customer(redis_client, keys, customer(f"c{i}", phones=(f"1555000{i}",),
                                                               account_number=f"8001000{i}"))
    page, total = await store.list_customers(redis_client, keys, offset=1, limit=2)
    assert total == 5 and [c.id for c in page] == ["c1", "c2"]
    case = await cases.open_case(redis_client, keys, customer_id="c1", summary="x", now=NOW)
    assert await store.delete_customer(redis_client, keys, "c1") is True
    assert await store.delete_customer(redis_client, keys, "c1") is False
    assert await store.get_customer(redis_client, keys, "c1") is None
    assert await store.customer_ids_for_phone(redis_client, keys, "15550001") == []
    assert await store.account_owner(redis_client, keys, "80010001") is None
    assert await cases.get_case(redis_client, keys, case.id) is None
    assert [c.id async for c in store.iter_customers(redis_client, keys, batch=2)] == ["c0", "c2", "c3", "c4"]


async def test_unreadable_profile_is_skipped_not_raised(redis_client: aioredis.Redis, keys: Keys) -> None:
    await redis_client.set(keys.customer("bad"), "{not json")
    await redis_client.zadd(keys.customer_ids(), {"bad": 0})
    assert await store.get_customer(redis_client, keys, "bad") is None
    assert await store.list_customers(redis_client, keys) == ([], 1)


# --- snapshot ------------------------------------------------------------------------------------

def contact(cid: str, started: float, outcome: Outcome = Outcome.ANSWERED, customer_id: str = "c1") -> Contact:
    return Contact(id=cid, kind=ContactKind.INBOUND, number="15550001", started_at=started,
                   customer_id=customer_id, ended_at=started + 60, agents=("agent1003",), outcome=outcome)


class CountingRedis:
    """Counts commands sent to the server (each execute_command is one round trip)."""

    def __init__(self, inner: aioredis.Redis) -> None:
        self.inner = inner
        self.commands: list[str] = []
        original = inner.execute_command

        async def counted(*args: object, **kwargs: object) -> object:
            self.commands.append(str(args[0]))
            return await original(*args, **kwargs)
        inner.execute_command = counted  # type: ignore[method-assign]


async def test_snapshot_known_caller_in_one_round_trip(redis_client: aioredis.Redis, keys: Keys) -> None:
    c = customer()
    await store.save_customer(redis_client, keys, c)
    old_case = await cases.open_case(redis_client, keys, customer_id="c1", summary="old", now=NOW - 100)
    case = await cases.open_case(redis_client, keys, customer_id="c1", summary="SMS refund", now=NOW,
                                   owner_agent="agent1003", severity=2)
    closed = await cases.open_case(redis_client, keys, customer_id="c1", summary="done", now=NOW)
    await cases.update_case(redis_client, keys, closed.id, {"status": CaseStatus.CLOSED})
    await contacts.save_contact(redis_client, keys, contact("k1", NOW - 7200), now=NOW)
    await contacts.save_contact(redis_client, keys, contact("k2", NOW - 3600, Outcome.ABANDONED), now=NOW)
    await contacts.save_contact(redis_client, keys, contact("k3", NOW - 5, Outcome.IN_PROGRESS), now=NOW)
    await store.load_scripts(redis_client)  # warm: EVALSHA hits on the first call
    counter = CountingRedis(redis_client)
    snap = await store.snapshot_by_number(redis_client, keys, " 1555-0001 ")
    assert counter.commands == ["EVALSHA"]
    assert snap.number == "15550001" and not snap.anonymous
    assert snap.customer == c
    assert snap.open_cases == (case, old_case)
    assert isinstance(snap.open_cases[0], Case) and snap.open_cases[0].status is CaseStatus.OPEN
    assert snap.last_contact is not None and snap.last_contact.id == "k2"   # newest finished, not this call


async def test_snapshot_script_loads_itself_when_missing(redis_client: aioredis.Redis, keys: Keys) -> None:
    await redis_client.script_flush()
    await store.save_customer(redis_client, keys, customer())
    snap = await store.snapshot_by_number(redis_client, keys, "+49 30 123")
    assert snap.customer is not None and snap.customer.id == "c1"
    assert snap.open_cases == () and snap.last_contact is None


@pytest.mark.parametrize("number", ["anonymous", "", None, "<unknown>", "Restricted", "x' or 1=1", "1" * 40])
async def test_snapshot_anonymous_or_hostile_needs_no_round_trip(redis_client: aioredis.Redis, keys: Keys,
                                                                 number: str | None) -> None:
    counter = CountingRedis(redis_client)
    snap = await store.snapshot_by_number(redis_client, keys, number)
    assert snap.anonymous and snap.number == "" and snap.customer is None
    assert counter.commands == []


async def test_snapshot_unknown_and_shared_numbers(redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save_customer(redis_client, keys, customer("c1", account_number=None, pin_hash=None))
    await store.save_customer(redis_client, keys, customer("c2", account_number=None, pin_hash=None,
                                                           phones=("15550001",)))
    shared = await store.snapshot_by_number(redis_client, keys, "15550001")
    assert shared.customer is None and not shared.anonymous and shared.number == "15550001"
    unknown = await store.snapshot_by_number(redis_client, keys, "15559999")
    assert unknown.customer is None and not unknown.anonymous


async def test_snapshot_with_default_country(redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save_customer(redis_client, keys, customer())
    snap = await store.snapshot_by_number(redis_client, keys, "030 123", default_country="DE")
    assert snap.customer is not None and snap.number == "+4930123"


@pytest.mark.parametrize("caller_id", ["13800000001", "013800000001", "8613800000001", "+8613800000001",
                                       "008613800000001"])
async def test_domestic_caller_ids_find_the_customer_stored_in_e164(
        redis_client: aioredis.Redis, keys: Keys, caller_id: str) -> None:
    valid, errors = cv.validate_customer({"id": "c-cn", "name": "Wang Lei", "phones": ["+86 138 0000 0001"]},
                                         default_country="CN")
    assert not errors and valid is not None and valid.customer.phones == ("+8613800000001",)
    await store.save_customer(redis_client, keys, valid.customer)
    snap = await store.snapshot_by_number(redis_client, keys, caller_id, default_country="CN")
    assert snap.customer is not None and snap.customer.id == "c-cn"
    assert snap.number == "+8613800000001"


@pytest.mark.parametrize(("stored", "caller_id"), [
    ("13800000001", "013800000001"),     # imported before E.164 from a national-form file
    ("13800000001", "+8613800000001"),
    ("013800000001", "013800000001"),    # stored with the trunk prefix, called with it
    ("8613800000001", "13800000001"),    # the old callback form (E.164 without '+')
])
async def test_customers_stored_under_the_old_normal_form_are_still_found(
        redis_client: aioredis.Redis, keys: Keys, stored: str, caller_id: str) -> None:
    # A profile written by a version that kept national numbers as dialled (no region).
    await store.save_customer(redis_client, keys, customer("c-old", phones=(stored,), account_number=None,
                                                           pin_hash=None))
    snap = await store.snapshot_by_number(redis_client, keys, caller_id, default_country="CN")
    assert snap.customer is not None and snap.customer.id == "c-old" and snap.number == "+8613800000001"


async def test_saving_an_old_customer_again_moves_it_to_the_e164_index(
        redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save_customer(redis_client, keys, customer("c-old", phones=("13800000001",), account_number=None,
                                                           pin_hash=None))
    valid, errors = cv.validate_customer({"id": "c-old", "name": "Wang Lei", "phones": ["13800000001"]},
                                         default_country="CN")
    assert not errors and valid is not None
    await store.save_customer(redis_client, keys, valid.customer)  # a re-import
    assert await store.customer_ids_for_phone(redis_client, keys, "13800000001") == []
    assert await store.customer_ids_for_phone(redis_client, keys, "+8613800000001") == ["c-old"]
    snap = await store.snapshot_by_number(redis_client, keys, "013800000001", default_country="CN")
    assert snap.customer is not None and snap.customer.id == "c-old"


async def test_one_number_under_an_old_and_the_new_form_of_two_customers_is_shared(
        redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save_customer(redis_client, keys, customer("c1", phones=("13800000001",), account_number=None,
                                                           pin_hash=None))
    await store.save_customer(redis_client, keys, customer("c2", phones=("+8613800000001",), account_number=None,
                                                           pin_hash=None))
    snap = await store.snapshot_by_number(redis_client, keys, "13800000001", default_country="CN")
    assert snap.customer is None and not snap.anonymous and snap.number == "+8613800000001"


# --- account + PIN -------------------------------------------------------------------------------

POLICY = LockoutPolicy(max_failures=3, window_seconds=900, lock_seconds=1800)


async def test_identify_success_clears_failures(redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save_customer(redis_client, keys, customer())
    assert await identify(redis_client, keys, "80010001", "0000", NOW, policy=POLICY) is None
    assert await redis_client.exists(keys.pin_failures("80010001"))
    found = await identify(redis_client, keys, "80010001", PIN, NOW + 1, policy=POLICY)
    assert isinstance(found, Customer) and found.id == "c1"
    assert not await redis_client.exists(keys.pin_failures("80010001"))


async def test_lockout_after_three_failures(redis_client: aioredis.Redis, keys: Keys,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await store.save_customer(redis_client, keys, customer())
    wrong = ["1111", "2222", "93939393"]
    results = [await identify(redis_client, keys, "80010001", pin, NOW + i * 60, policy=POLICY)
               for i, pin in enumerate(wrong)]
    assert results[:2] == [None, None]
    assert results[2] == Locked(NOW + 120 + 1800)
    # Locked: even the right PIN is refused until the lock ends.
    assert await identify(redis_client, keys, "80010001", PIN, NOW + 600,
                                           policy=POLICY) == Locked(NOW + 120 + 1800)
    ttl = await redis_client.ttl(keys.pin_failures("80010001"))
    assert 1700 < ttl <= 1802
    after = await identify(redis_client, keys, "80010001", PIN, NOW + 120 + 1801, policy=POLICY)
    assert isinstance(after, Customer)
    text = caplog.text
    for pin in [*wrong, PIN]:
        assert pin not in text
    assert "80010001" not in text and "****0001" in text


async def test_failures_outside_the_window_do_not_lock(redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save_customer(redis_client, keys, customer())
    for i in range(5):
        result = await identify(redis_client, keys, "80010001", "1111", NOW + i * 600,
                                                 policy=POLICY)
        assert result is None


async def test_unknown_account_counts_and_locks_like_a_known_one(redis_client: aioredis.Redis, keys: Keys) -> None:
    results = [await identify(redis_client, keys, "99990000", "1234", NOW + i, policy=POLICY)
               for i in range(3)]
    assert results == [None, None, Locked(NOW + 2 + 1800)]


@pytest.mark.parametrize(("account", "pin"), [("8001 0001", PIN), ("", PIN), ("80010001\r\n", PIN),
                                              ("80010001", "43210000000"), ("80010001", "")])
async def test_malformed_input_is_refused(redis_client: aioredis.Redis, keys: Keys, account: str, pin: str) -> None:
    await store.save_customer(redis_client, keys, customer())
    assert await identify(redis_client, keys, account, pin, NOW, policy=POLICY) is None


async def test_customer_without_pin_cannot_identify(redis_client: aioredis.Redis, keys: Keys) -> None:
    await store.save_customer(redis_client, keys, customer(pin_hash=None))
    assert await identify(redis_client, keys, "80010001", "0000", NOW, policy=POLICY) is None
