"""domain/notices.py: consent, language, budget, batching, the plan, validation, "press 1" routing."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from ivrserver import config
from ivrserver.domain import notices as nm
from ivrserver.domain.callbacks import Callback, CallbackPolicy
from ivrserver.domain.model import AgentState, AgentStatus, ContactPreferences, Customer
from ivrserver.domain.notices import Facts, NoticePolicy, NoticeRequest, Plan
from ivrserver.domain.routing import Action, QueueTarget

DAY = 86400.0
# Monday 2025-03-03 10:00 UTC
T0 = datetime(2025, 3, 3, 10, 0, tzinfo=UTC).timestamp()
ALL_DAY = CallbackPolicy(calling_from="00:00", calling_until="24:00")
OFFICE = CallbackPolicy(calling_from="09:00", calling_until="18:00")
PREFS = ContactPreferences(timezone="UTC", allowed_from="00:00", allowed_until="24:00")
CUSTOMER = Customer(id="c1", name="Li Lei", phones=("15550001",), preferences=PREFS)


@pytest.mark.parametrize(("attribute", "kind", "defaults", "wanted"), [
    (None, "case_result", {"case_result"}, True),  # the default: they asked for the result
    (None, "card_expiry", {"case_result"}, False),  # marketing-like kinds: not without consent
    ("card_expiry", "card_expiry", {"case_result"}, True),
    ("card_expiry, roaming", "roaming", set(), True),
    ("-case_result", "case_result", {"case_result"}, False),  # explicit opt-out beats the default
    ("none", "case_result", {"case_result"}, False),
    ("none,card_expiry", "card_expiry", {"case_result"}, True),  # none + explicit consent
    ("card_expiry,-card_expiry", "card_expiry", set(), False),  # both: refused
    ("CARD_EXPIRY", "card_expiry", set(), True),  # case does not matter
    ("card-expiry!,??", "card_expiry", set(), False),  # junk is ignored
    ("", "incident", {"incident", "case_result"}, True),
])
def test_consent(attribute: str | None, kind: str, defaults: set[str], wanted: bool) -> None:
    attrs = {} if attribute is None else {"notices": attribute}
    assert nm.consents(attrs, kind, defaults) is wanted


@pytest.mark.parametrize(("texts", "language", "chosen"), [
    ({"en": "hi", "zh": "你好"}, "zh", ("zh", "你好")),
    ({"en": "hi", "zh": "你好"}, "en", ("en", "hi")),
    ({"en": "hi"}, "zh", ("en", "hi")),  # the other language when theirs is missing
    ({"zh": "你好"}, "en", ("zh", "你好")),
    ({"zh": "你好"}, "fr", ("zh", "你好")),
    ({}, "en", None),
])
def test_choose_text(texts: dict[str, str], language: str, chosen: tuple[str, str] | None) -> None:
    assert nm.choose_text(texts, language) == chosen


W = 7 * DAY


@pytest.mark.parametrize(("t", "counted", "limit", "slot"), [
    (T0, [], 2, T0),
    (T0, [T0 - DAY], 2, T0),
    (T0, [T0 - DAY, T0 - 2 * DAY], 2, T0 - 2 * DAY + W),  # full: the oldest leaves the window
    (T0, [T0 - 8 * DAY, T0 - 9 * DAY], 2, T0),  # both already out of the window
    (T0, [T0 + DAY], 1, T0 + DAY + W),  # a planned call in the future counts too
    (T0, [T0 - W], 1, T0),  # exactly a window apart: not closer than the window
    (T0, [T0 - DAY, T0 + 3 * DAY], 2, T0 - DAY + W + 0.0),  # fits once the past one left…
    (T0, [T0 - DAY, T0 + 3 * DAY, T0 + 9 * DAY], 2, T0 + 3 * DAY + W),  # …unless a later one fills it
    (T0, [T0], 0, None),  # no calls at all
])
def test_budget_slot(t: float, counted: list[float], limit: int, slot: float | None) -> None:
    found = nm.budget_slot(t, counted, limit, W)
    assert found == slot
    if found is not None:
        assert nm.in_budget_window(found, counted, W) < limit


def test_budget_slots_keep_every_window_at_the_limit() -> None:
    counted: list[float] = []
    for i in range(40):
        slot = nm.budget_slot(T0 + i * 0.5 * DAY, counted, 3, W)
        assert slot is not None
        counted.append(slot)
    for start in counted:
        assert sum(1 for s in counted if start <= s < start + W) <= 3


@pytest.mark.parametrize(("due", "not_before", "pending", "picked"), [
    (T0, None, [], []),
    (T0, None, [("a", T0 + 300)], ["a"]),
    (T0, None, [("a", T0 + 900)], []),  # farther than batch_seconds
    (T0, None, [("a", T0 + 500), ("b", T0 - 100)], ["b", "a"]),  # closest first
    (T0, T0, [("a", T0 - 100)], []),  # would play before not_before
    (T0, T0, [("a", T0 + 100)], ["a"]),
])
def test_batch_target(due: float, not_before: float | None, pending: list[tuple[str, float]],
                      picked: list[str]) -> None:
    assert nm.batch_target(due, not_before, pending, 600) == picked


def req(**kw: object) -> NoticeRequest:
    base: dict[str, object] = {"key": "k1", "customer_id": "c1", "kind": "case_result", "text": {"en": "Done."}}
    return NoticeRequest(**{**base, **kw})  # type: ignore[arg-type]


def facts(**kw: object) -> Facts:
    base: dict[str, object] = {"number": "15550001", "preferences": PREFS}
    return Facts(**{**base, **kw})  # type: ignore[arg-type]


NIGHT = ContactPreferences(timezone="UTC", allowed_from="20:00", allowed_until="21:00")
POLICY = NoticePolicy(max_calls=2, budget_days=7, batch_seconds=600, window_days=3)


@pytest.mark.parametrize(("request_", "facts_", "calling", "expected"), [
    (req(), facts(), ALL_DAY, Plan("call", at=T0, latest=T0 + 3 * DAY)),
    (req(), facts(consent=False), ALL_DAY, Plan("none", reason="no_consent")),
    (req(), facts(number=None), ALL_DAY, Plan("none", reason="no_phone")),
    (req(), facts(number=""), ALL_DAY, Plan("none", reason="no_phone")),
    (req(expires_at=T0 - 1), facts(), ALL_DAY, Plan("none", reason="expired")),
    (req(channel="sms"), facts(), ALL_DAY, Plan("none", reason="no_sms")),
    (req(channel="sms"), facts(sms_available=True), ALL_DAY, Plan("sms", at=T0, latest=T0 + 3 * DAY)),
    # do-not-call never rings: an SMS when allowed, else refused
    (req(), facts(preferences=ContactPreferences(do_not_call=True)), ALL_DAY, Plan("none", reason="do_not_call")),
    (req(), facts(preferences=ContactPreferences(do_not_call=True), sms_available=True), ALL_DAY,
     Plan("sms", at=T0, reason="do_not_call", latest=T0 + 3 * DAY)),
    (req(channel="call"), facts(preferences=ContactPreferences(do_not_call=True), sms_available=True), ALL_DAY,
     Plan("none", reason="do_not_call")),
    # hours: the customer's evening window, company hours all day → 20:00 today
    (req(), facts(preferences=NIGHT), ALL_DAY, Plan("call", at=T0 + 10 * 3600, latest=T0 + 3 * DAY)),
    # company 09-18 and customer 20-21 never overlap
    (req(), facts(preferences=NIGHT), OFFICE, Plan("none", reason="no_calling_hours")),
    # not_before tomorrow 08:00, company hours from 09:00
    (req(not_before=T0 + 22 * 3600), facts(), OFFICE, Plan("call", at=T0 + 23 * 3600, latest=T0 + 22 * 3600 + 3 * DAY)),
    # the window opens after the expiry
    (req(expires_at=T0 + 3600), facts(preferences=NIGHT), ALL_DAY, Plan("none", reason="no_calling_hours")),
])
def test_plan(request_: NoticeRequest, facts_: Facts, calling: CallbackPolicy, expected: Plan) -> None:
    assert nm.plan(request_, facts_, POLICY, calling, T0) == expected


@pytest.mark.parametrize(("request_", "facts_", "expected"), [
    (req(), facts(), Plan("call", at=T0, latest=T0 + 3 * DAY)),
    (req(), facts(counted=[T0 - DAY]), Plan("call", at=T0, latest=T0 + 3 * DAY)),
    # over budget: deferred to when the oldest call leaves the window (within the notice's life)
    (req(), facts(counted=[T0 - 5 * DAY, T0 - DAY]),
     Plan("call", at=T0 + 2 * DAY, reason="budget", deferred=True, latest=T0 + 3 * DAY)),
    # …by SMS instead when the channel is auto and SMS is there
    (req(), facts(counted=[T0 - 5 * DAY, T0 - DAY], sms_available=True),
     Plan("sms", at=T0, reason="budget", latest=T0 + 3 * DAY)),
    # …refused when the budget frees only after the notice is moot
    (req(), facts(counted=[T0 - DAY, T0 - 2 * DAY]), Plan("none", reason="budget")),
])
def test_budget(request_: NoticeRequest, facts_: Facts, expected: Plan) -> None:
    call = nm.plan(request_, facts_, POLICY, ALL_DAY, T0)
    assert nm.within_budget(call, request_, facts_, POLICY, ALL_DAY) == expected


def test_a_deferred_call_lands_inside_the_customers_hours() -> None:
    prefs = ContactPreferences(timezone="UTC", allowed_from="09:00", allowed_until="10:00")
    f = facts(preferences=prefs, counted=[T0 - 6.9 * DAY, T0 - DAY])  # frees at T0 + 0.1 day = 12:24
    call = nm.plan(req(not_before=T0 - 3600), f, POLICY, ALL_DAY, T0 - 3600)  # 09:00 today
    assert call == Plan("call", at=T0 - 3600, latest=T0 - 3600 + 3 * DAY)
    deferred = nm.within_budget(call, req(), f, POLICY, ALL_DAY)
    assert deferred == Plan("call", at=T0 + DAY - 3600, reason="budget", deferred=True, latest=call.latest)


@pytest.mark.parametrize(("raw", "field", "message"), [
    ({"key": ""}, "key", "empty"),
    ({"key": "x" * 201}, "key", "at most 200"),
    ({"customer_id": "a b"}, "customer_id", "expected an id"),
    ({"kind": "Card"}, "kind", "expected a-z"),
    ({"channel": "fax"}, "channel", "one of auto, call, sms"),
    ({"text": {}}, "text", "at least one language"),
    ({"text": {"english": "x"}}, "text", "unknown language"),
    ({"text": {"en": "a\x07b"}}, "text", "control character"),
    ({"text": {"en": "   "}}, "text", "empty"),
    ({"not_before": -1}, "not_before", "epoch seconds"),
    ({"expires_at": float("nan")}, "expires_at", "epoch seconds"),
    ({"case_id": "K 1"}, "case_id", "expected an id"),
])
def test_validation(raw: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(nm.NoticeInvalid) as caught:
        nm.validate(req(**raw))
    assert message in caught.value.errors[field]


# 20:00-21:00 UTC evenings; T0 is 10:00 → the window opens at T0 + 10 h
EVENING = T0 + 10 * 3600


@pytest.mark.parametrize(("request_", "facts_", "expected"), [
    # an SMS waits for the allowed hours like a call would …
    (req(channel="sms"), facts(preferences=NIGHT, sms_available=True), Plan("sms", at=EVENING, latest=T0 + 3 * DAY)),
    (req(), facts(preferences=ContactPreferences(timezone="UTC", allowed_from="20:00", allowed_until="21:00",
                                                 do_not_call=True), sms_available=True),
     Plan("sms", at=EVENING, reason="do_not_call", latest=T0 + 3 * DAY)),
    # … and not_before
    (req(channel="sms", not_before=T0 + 600), facts(sms_available=True),
     Plan("sms", at=T0 + 600, latest=T0 + 600 + 3 * DAY)),
    # … unless the kind is urgent: at once, any hour
    (req(channel="sms", kind="roaming"), facts(preferences=NIGHT, sms_available=True),
     Plan("sms", at=T0, latest=T0 + 3 * DAY)),
    (req(channel="sms", kind="roaming", not_before=T0 + 60), facts(preferences=NIGHT, sms_available=True),
     Plan("sms", at=T0 + 60, latest=T0 + 60 + 3 * DAY)),
    # no hours before the expiry: refused, whatever the channel (urgent kinds excepted)
    (req(channel="sms", expires_at=T0 + 3600), facts(preferences=NIGHT, sms_available=True),
     Plan("none", reason="no_calling_hours")),
    (req(expires_at=T0 + 3600), facts(preferences=NIGHT, sms_available=True), Plan("none", reason="no_calling_hours")),
    (req(kind="roaming", expires_at=T0 + 3600), facts(preferences=NIGHT, sms_available=True),
     Plan("sms", at=T0, reason="no_calling_hours", latest=T0 + 3600)),
])
def test_sms_is_held_to_the_allowed_hours(request_: NoticeRequest, facts_: Facts, expected: Plan) -> None:
    assert nm.plan(request_, facts_, POLICY, ALL_DAY, T0) == expected


def test_an_sms_instead_of_an_evening_call_over_budget_goes_in_the_evening() -> None:
    f = facts(preferences=NIGHT, counted=[T0 - 5 * DAY, T0 - DAY], sms_available=True)
    call = nm.plan(req(), f, POLICY, ALL_DAY, T0)
    assert call == Plan("call", at=EVENING, latest=T0 + 3 * DAY) and call.sms_at == EVENING
    assert nm.within_budget(call, req(), f, POLICY, ALL_DAY) == Plan("sms", at=EVENING, reason="budget",
                                                                    latest=T0 + 3 * DAY)


@pytest.mark.parametrize(("raw", "region", "normal"), [
    ("+86 138 1234 5678", "", "+8613812345678"),
    ("013812345678", "CN", "+8613812345678"),
    ("13812345678", "CN", "+8613812345678"),
    ("008613812345678", "", "+8613812345678"),
    ("(650) 253-0000", "US", "+16502530000"),
    ("15550001", "", "15550001"),  # not a number libphonenumber knows: as dialled (as callbacks take it)
])
def test_number_is_normalised(raw: str, region: str, normal: str) -> None:
    assert nm.validate(req(number=raw), region).number == normal


@pytest.mark.parametrize("raw", ["", "anonymous", "abc", "+0123", "1" * 30, "138\x00", 13812345678])
def test_a_bad_number_is_refused(raw: object) -> None:
    with pytest.raises(nm.NoticeInvalid) as caught:
        nm.validate(req(number=raw), "CN")
    assert set(caught.value.errors) == {"number"}


@pytest.mark.parametrize(("number", "zone", "language"), [
    ("+8613812345678", "Asia/Shanghai", "zh"),
    ("+16502530000", "America/Los_Angeles", "en"),
    ("+12025550123", "America/New_York", "en"),
    ("+4915112345678", "Europe/Berlin", "en"),
    ("+79161234567", None, "en"),  # Russia: many zones → the company's
    ("+61412345678", None, "en"),
    ("+85291234567", "Asia/Hong_Kong", "zh"),
    ("15550001", None, ""),  # not E.164
])
def test_number_timezone_and_language(number: str, zone: str | None, language: str) -> None:
    assert nm.number_timezone(number) == zone
    assert nm.number_language(number) == language


BUSINESS = "Asia/Shanghai"


@pytest.mark.parametrize(("request_", "customer", "expected"), [
    # a caller without a record: the number's zone, default hours, standard tier
    (req(customer_id="tel-16502530000", number="+16502530000"), None,
     nm.Recipient("tel-16502530000", "+16502530000", "en", "standard",
                  ContactPreferences(timezone="America/Los_Angeles"), {}, False)),
    # … the company's zone when the number has several
    (req(customer_id="tel-79161234567", number="+79161234567"), None,
     nm.Recipient("tel-79161234567", "+79161234567", "en", "standard", ContactPreferences(timezone=BUSINESS), {},
                  False)),
    (req(customer_id="tel-x"), None,
     nm.Recipient("tel-x", None, "", "standard", ContactPreferences(timezone=BUSINESS), {}, False)),
    # a customer: their record; the request's number wins over their first phone
    (req(), CUSTOMER, nm.Recipient("c1", "15550001", "en", "standard", PREFS, {}, True)),
    (req(number="+8613812345678"), CUSTOMER, nm.Recipient("c1", "+8613812345678", "en", "standard", PREFS, {}, True)),
    (req(), Customer(id="c1", name="x", phones=()), nm.Recipient("c1", None, "en", "standard", ContactPreferences(),
                                                                 {}, True)),
])
def test_recipient(request_: NoticeRequest, customer: Customer | None, expected: nm.Recipient) -> None:
    assert nm.recipient(request_, customer, "", BUSINESS) == expected


def test_a_caller_without_a_record_gets_the_kinds_default_consent() -> None:
    assert nm.consents({}, "incident", POLICY.default_consent)
    assert not nm.consents({}, "card_expiry", POLICY.default_consent)


def test_validation_strips_texts_and_the_id_follows_the_key() -> None:
    valid = nm.validate(req(key=" k1 ", text={"en": "  Done.  "}))
    assert (valid.key, dict(valid.text)) == ("k1", {"en": "Done."})
    assert nm.notice_id("k1") == nm.notice_id("k1") != nm.notice_id("k2")
    assert nm.call_id_for(nm.notice_id("k1")).startswith("ntc-")


TIER = QueueTarget("vip", 5)


@pytest.mark.parametrize(("owner", "state", "endpoint", "action", "queue", "why"), [
    ("agent1003", AgentState.READY, "PJSIP/agent1003", Action.AGENT, "vip", "case owner agent1003"),
    ("agent1003", AgentState.ON_CALL, "PJSIP/agent1003", Action.AGENT, "vip", "case owner"),  # rings, then queue
    ("agent1003", AgentState.PAUSED, "PJSIP/agent1003", Action.QUEUE, "vip", "unavailable"),
    ("agent1003", AgentState.LOGGED_OUT, "PJSIP/agent1003", Action.QUEUE, "vip", "unavailable"),
    ("agent1003", None, "PJSIP/agent1003", Action.QUEUE, "vip", "unavailable"),
    ("ghost", AgentState.READY, None, Action.QUEUE, "vip", "unavailable"),  # not in agents.yaml
    (None, None, None, Action.QUEUE, "vip", "no case owner"),
])
def test_press_1_route(owner: str | None, state: AgentState | None, endpoint: str | None, action: Action,
                       queue: str, why: str) -> None:
    status = None if state is None or owner is None else AgentStatus(owner, state, T0)
    route = nm.route_to_owner(owner, status, endpoint, TIER, 20, "K-7")
    assert (route.action, route.queue, route.priority) == (action, queue, 5)
    assert why in route.reason and "case K-7" in route.reason
    if action is Action.AGENT:
        assert (route.dial, route.ring_seconds) == (endpoint, 20)


def test_case_result_values_and_batch_prompt() -> None:
    assert nm.case_result_values("K-7", " charge\n cancelled ") == {"case": "K-7", "result": "charge cancelled"}
    assert len(nm.case_result_values("K-7", "x" * 500)["result"]) == 200
    assert nm.batch_prompt(["ivrserver/msg-a", "", "ivrserver/msg-b"]) == "ivrserver/msg-a&ivrserver/msg-b"


def test_notice_json_round_trip() -> None:
    n = nm.Notice(id="nt-1", key="k", customer_id="c1", kind="case_result", state=nm.NoticeState.HEARD,
                  created_at=T0, text="t", case_id="K-1", call_id="ntc-1", outcomes=(("heard", T0 + 5),),
                  number="+8613812345678")
    assert nm.from_dict(nm.to_dict(n)) == n


def _on_call(nid: str, kind: str, at: float, expires: float | None = None,
             state: nm.NoticeState = nm.NoticeState.SCHEDULED) -> nm.Notice:
    return nm.Notice(id=nid, key=nid, customer_id="c1", kind=kind, state=state, created_at=at, sound=f"msg-{nid}",
                     call_id="ntc-1", expires_at=expires)


A = _on_call("a", "case_result", T0)
B = _on_call("b", "card_expiry", T0 + 1)
C = _on_call("c", "incident", T0 + 2, expires=T0 + 3600)
GONE = _on_call("g", "card_expiry", T0 + 3, state=nm.NoticeState.CANCELLED)  # ended by an earlier look
STRAY = nm.Notice(id="s", key="s", customer_id="c1", kind="roaming", state=nm.NoticeState.SCHEDULED,
                  created_at=T0 + 4, sound="msg-s", call_id="ntc-1")  # attached, never carried


@pytest.mark.parametrize(("notices", "consent", "at", "kept", "dropped", "prompt", "kinds"), [
    ([A, B, C], "card_expiry", T0, "abc", "", "msg-a&msg-b&msg-c", "card_expiry,case_result,incident"),
    ([A, B, C], "-card_expiry", T0, "ac", "b:consent_withdrawn", "msg-a&msg-c", "case_result,incident"),
    ([A, B, C], "card_expiry", T0 + 7200, "ab", "c:expired", "msg-a&msg-b", "card_expiry,case_result"),
    ([A, B, C], "none", T0, "", "a:consent_withdrawn b:consent_withdrawn c:consent_withdrawn", "", ""),
    ([A, GONE], "card_expiry", T0, "a", "", "msg-a", "case_result"),  # the ended one leaves the prompt
    ([A, STRAY], "roaming", T0, "as", "", "msg-a", "case_result,roaming"),  # never carried: not played
    ([STRAY], "roaming", T0, "s", "", "", "roaming"),
])
def test_look_before_dial(notices: list[nm.Notice], consent: str, at: float, kept: str, dropped: str, prompt: str,
                          kinds: str) -> None:
    carried = [n for n in notices if n is not STRAY]
    cb = Callback(id="ntc-1", customer_id="c1", number="15550001", earliest=T0, latest=T0 + DAY, created_at=T0,
                  prompt="&".join(n.sound for n in carried), notice=",".join(sorted({n.kind for n in carried})),
                  attempts=1)
    look = nm.look_before_dial(cb, list(reversed(notices)), {"notices": consent}, {"case_result", "incident"}, at)
    assert "".join(n.id for n in look.keep) == kept
    assert " ".join(f"{n.id}:{s.reason}" for n, s in look.drop) == dropped
    assert all(s.attempt == 1 and s.state is (nm.NoticeState.CANCELLED if s.reason == "consent_withdrawn"
                                              else nm.NoticeState.FAILED) for _, s in look.drop)
    assert (look.prompt, look.kinds) == (prompt, kinds)
    assert look.changed(cb) is (prompt != cb.prompt or bool(dropped))


def test_the_prompt_keeps_a_shared_message_once_per_notice() -> None:
    twin = dataclasses.replace(_on_call("a2", "incident", T0 + 1), sound=A.sound)
    cb = Callback(id="ntc-1", customer_id="c1", number="1", earliest=T0, latest=T0 + DAY, created_at=T0,
                  prompt=f"{A.sound}&{A.sound}", notice="case_result,incident")
    look = nm.look_before_dial(cb, [A, twin], {"notices": "-incident"}, {"case_result", "incident"}, T0)
    assert look.prompt == A.sound and [n.id for n in look.keep] == ["a"]


@pytest.mark.parametrize(("value", "problem"), [
    ("", None),  # the stock sound
    ("To talk to an agent, press 1.", None),
    ("如需人工服务，请按1。", None),
    ("   ", "empty"),
    ("press 1\nthen 2", "control character"),
    ("x" * 201, "at most 200"),
])
def test_call_texts_are_checked_at_start(value: str, problem: str | None) -> None:
    if problem is None:
        nm.check_call_text(value)
        assert config.from_mapping({"notices": {"press_zh": value, "bye_en": value}}).notices.press_zh == value
        return
    with pytest.raises(ValueError, match=problem):
        nm.check_call_text(value)
    with pytest.raises(config.ConfigError, match=f"notices.bye_zh: .*{problem}"):
        config.from_mapping({"notices": {"bye_zh": value}})
