"""MenuRun over tables of (events → commands): every handler and every action."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ivrserver.domain import menu_engine as e
from ivrserver.domain.menu import Menu, SayKind
from ivrserver.files.menus import check_text

MENU = """
human: {queue: general, priority: 1}
defaults:
  tries: 2
  timeout: 4
  digit_timeout: 2
  handlers:
    invalid: {play: [pbx-invalid], repeat: true}
hours:
  timezone: UTC
  weekly: {mon: ["08:00-18:00"]}
  holidays: ["2025-06-09"]
entry: {open: main, closed: closed, holiday: holiday}
announcement: {interruptible: true}
nodes:
  main:
    prompts: [hello]
    options:
      "1": {goto: sub}
      "2": {queue: billing, priority: 3}
      "3": {transfer: PJSIP/agent1003, ring: 15, fallback_queue: vip, priority: 2}
      "4": {goto: amount}
      "5": {goto: balance}
      "#": {hangup: true, play: [goodbye]}
  sub:
    prompts: [vm-options]
    handlers:
      timeout: {play: [vm-pls-try-again], repeat: true}
      failure: {queue: faults}
    options:
      "1": {back: true}
      "2": {repeat: true}
      "3": {callback: general, priority: 4}
      "4": {language: fr, goto: main}
      "5": {hangup: true, served: false}
      "6": {goto: account}
  amount:
    type: collect
    prompts: [vm-enter-num-to-call]
    variable: amount
    min_digits: 2
    max_digits: 4
    terminator: "#"
    next: {goto: confirm}
  confirm:
    type: play
    prompts: [you-entered, {say: digits, var: amount}]
    next: {queue: billing}
  balance:
    type: lookup
    field: balance
    prompts: [vm-youhave]
    after: [digits/dollars]
    next: {hangup: true}
  account:
    type: collect
    prompts: [agent-user]
    variable: acct
    next: {goto: pin}
  pin:
    type: collect
    prompts: [agent-pass]
    variable: pin
    next: {goto: ident}
  ident:
    type: identify
    account: acct
    pin: pin
    next: {goto: balance}
    locked: {queue: vip}
  closed:
    prompts: [vm-nobodyavail]
    human_key: false
    options:
      "1": {goto: balance}
  holiday:
    type: play
    prompts: [ss-noservice]
    next: {hangup: true, served: false}
"""

OPEN = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)  # a Monday, 10:00


@pytest.fixture(scope="module")
def menu() -> Menu:
    built, issues = check_text(MENU, "t.yaml", "t")
    assert built is not None, [i.format() for i in issues]
    return built


def S(*files: str) -> tuple[e.Sound, ...]:
    return tuple(e.Sound(f) for f in files)


def collect(*files: str, max_digits: int = 1, timeout: int = 4000, term: str = "") -> e.Collect:
    return e.Collect(S(*files), max_digits=max_digits, timeout_ms=timeout, digit_timeout_ms=2000, terminator=term)


MAIN = collect("hello")
SUB = collect("vm-options")


def D(digits: str) -> e.DigitsEntered:
    return e.DigitsEntered(digits)


T = e.InputTimedOut()

# (events after start, commands of the LAST step, exit reason, exit node, queue)
CASES: list[tuple[str, list[e.Event], list[e.Command], e.ExitReason | None, str, str]] = [
    ("goto", [D("1")], [SUB], None, "", ""),
    ("queue with priority", [D("2")], [e.Transfer("billing", 3, "ivr:main:2")], e.ExitReason.QUEUE, "main",
     "billing"),
    ("transfer to an agent", [D("3")], [e.ToAgent("PJSIP/agent1003", 15, "vip", 2, "ivr:main:3")],
     e.ExitReason.AGENT, "main", "vip"),
    ("play and hang up (served)", [D("#")], [e.Play(S("goodbye")), e.Hangup("self_served")],
     e.ExitReason.SELF_SERVED, "main", ""),
    ("0 reaches the human action", [D("0")], [e.Transfer("general", 1, "ivr:main:human")], e.ExitReason.QUEUE,
     "main", "general"),
    ("invalid key: handler prompts, then the node again", [D("7")], [collect("pbx-invalid", "hello")], None,
     "", ""),
    ("caller data never chooses an option: multi-digit input is invalid", [D("12")],
     [collect("pbx-invalid", "hello")], None, "", ""),
    ("timeout without a handler: the node again", [T], [MAIN], None, "", ""),
    ("tries used up: default failure goes to the human", [D("7"), T], [e.Transfer("general", 1,
                                                                                   "ivr:main:failure")],
     e.ExitReason.QUEUE, "main", "general"),
    ("node timeout handler", [D("1"), T], [collect("vm-pls-try-again", "vm-options")], None, "", ""),
    ("node failure handler", [D("1"), T, T], [e.Transfer("faults", 0, "ivr:sub:failure")], e.ExitReason.QUEUE,
     "sub", "faults"),
    ("back to the previous menu", [D("1"), D("1")], [MAIN], None, "", ""),
    ("back at the top stays", [D("1"), D("1"), D("7"), D("1"), D("1")], [MAIN], None, "", ""),
    ("repeat option resets tries", [D("1"), T, D("2"), T], [collect("vm-pls-try-again", "vm-options")], None,
     "", ""),
    ("callback offered", [D("1"), D("3")], [e.OfferCallback("general", 4, "ivr:sub:3")], None, "", ""),
    ("callback accepted", [D("1"), D("3"), e.CallbackScheduled(True)], [e.Hangup("callback")],
     e.ExitReason.CALLBACK, "sub", "general"),
    ("callback declined: the human", [D("1"), D("3"), e.CallbackScheduled(False)],
     [e.Transfer("general", 1, "ivr:sub:callback-declined")], e.ExitReason.QUEUE, "sub", "general"),
    ("language choice", [D("1"), D("4")], [e.SetLanguage("fr"), MAIN], None, "", ""),
    ("hang up, not served", [D("1"), D("5")], [e.Hangup("ended")], e.ExitReason.ENDED, "sub", ""),
    ("collect digits", [D("4")], [collect("vm-enter-num-to-call", max_digits=4, term="#")], None, "", ""),
    ("collected digits are said back", [D("4"), D("123#")],
     [e.Play((e.Sound("you-entered"), e.Say(SayKind.DIGITS, "123"))), e.Transfer("billing", 0,
                                                                                   "ivr:confirm:next")],
     e.ExitReason.QUEUE, "confirm", "billing"),
    ("too few digits are invalid", [D("4"), D("1#")],
     [collect("pbx-invalid", "vm-enter-num-to-call", max_digits=4, term="#")], None, "", ""),
    ("non-digits in collected input are invalid", [D("4"), D("1*2")],
     [collect("pbx-invalid", "vm-enter-num-to-call", max_digits=4, term="#")], None, "", ""),
    ("lookup", [D("5")], [e.Lookup(("balance",))], None, "", ""),
    ("lookup found: say it", [D("5"), e.LookupDone({"balance": "42"})],
     [e.Play((e.Sound("vm-youhave"), e.Say(SayKind.NUMBER, "42"), e.Sound("digits/dollars"))),
      e.Hangup("self_served")], e.ExitReason.SELF_SERVED, "balance", ""),
    ("lookup missing: default human", [D("5"), e.LookupDone({"balance": None})],
     [e.Transfer("general", 1, "ivr:balance:missing")], e.ExitReason.QUEUE, "balance", "general"),
    ("lookup value that is not a number is never said", [D("5"), e.LookupDone({"balance": "4 2;x"})],
     [e.Transfer("general", 1, "ivr:balance:missing")], e.ExitReason.QUEUE, "balance", "general"),
    ("identify", [D("1"), D("6"), D("1234"), D("9999")], [e.Identify("1234", "9999")], None, "", ""),
    ("identified", [D("1"), D("6"), D("1234"), D("9999"), e.CallerIdentified("c1")],
     [e.Lookup(("balance",))], None, "", ""),
    ("identification failed: default human", [D("1"), D("6"), D("1234"), D("9999"), e.IdentificationFailed()],
     [e.Transfer("general", 1, "ivr:ident:failed")], e.ExitReason.QUEUE, "ident", "general"),
    ("identification locked", [D("1"), D("6"), D("1234"), D("9999"), e.IdentificationFailed(locked=True)],
     [e.Transfer("vip", 0, "ivr:ident:locked")], e.ExitReason.QUEUE, "ident", "vip"),
    ("caller hangs up", [D("1"), e.CallerHungUp()], [], e.ExitReason.CALLER_HANGUP, "sub", ""),
]


@pytest.mark.parametrize(("events", "expected", "reason", "node", "queue"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_engine_table(menu: Menu, events: list[e.Event], expected: list[e.Command],
                      reason: e.ExitReason | None, node: str, queue: str) -> None:
    run = e.MenuRun(menu)
    commands = run.start(e.StartContext(now=OPEN))
    assert commands == [MAIN]
    for event in events:
        commands = run.feed(event)
    assert commands == expected
    if reason is None:
        assert run.exit is None and not run.finished
    else:
        assert run.exit is not None
        assert (run.exit.reason, run.exit.node, run.exit.queue) == (reason, node, queue)
        assert run.path[-1].kind is e.PathKind.EXIT and run.path[-1].detail == reason


@pytest.mark.parametrize(("now", "first", "state"), [
    (OPEN, MAIN, "open"),
    (datetime(2025, 6, 2, 18, 0, tzinfo=UTC), collect("vm-nobodyavail"), "closed"),  # end is exclusive
    (datetime(2025, 6, 3, 10, 0, tzinfo=UTC), collect("vm-nobodyavail"), "closed"),  # Tuesday: no hours
    (datetime(2025, 6, 9, 10, 0, tzinfo=UTC), None, "holiday"),  # a Monday, but a holiday
])
def test_hours_choose_the_entry(menu: Menu, now: datetime, first: e.Command | None, state: str) -> None:
    run = e.MenuRun(menu)
    commands = run.start(e.StartContext(now=now))
    assert run.path[0] == e.PathEvent(e.PathKind.START, run.path[0].node, now.timestamp(), detail=state)
    if first is None:  # holiday: a play node that hangs up
        assert commands == [e.Play(S("ss-noservice")), e.Hangup("ended")]
        assert run.exit == e.Exit(e.ExitReason.ENDED, "holiday")
    else:
        assert commands == [first]


def test_human_key_off_makes_0_invalid(menu: Menu) -> None:
    run = e.MenuRun(menu)
    run.start(e.StartContext(now=datetime(2025, 6, 3, 10, 0, tzinfo=UTC)))
    assert run.feed(D("0")) == [collect("pbx-invalid", "vm-nobodyavail")]
    assert run.path[-1] == e.PathEvent(e.PathKind.INVALID, "closed", run.path[-1].at, key="0")


def test_announcement_slot_leads_the_entry_menu_and_a_key_during_it_is_the_first_choice(menu: Menu) -> None:
    run = e.MenuRun(menu)
    commands = run.start(e.StartContext(now=OPEN, announcement=("ss-noservice",)))
    assert commands == [collect("ss-noservice", "hello")]  # one Collect: a key stops it and is the choice
    assert [p.kind for p in run.path] == [e.PathKind.START, e.PathKind.ANNOUNCEMENT, e.PathKind.ENTER]
    assert run.feed(D("2")) == [e.Transfer("billing", 3, reason="ivr:main:2")]  # typed ahead over it
    again = e.MenuRun(menu)
    again.start(e.StartContext(now=OPEN, announcement=("ss-noservice",)))
    assert again.feed(D("9")) == [collect("pbx-invalid", "hello")]  # a retry does not repeat the announcement


@pytest.mark.parametrize(("name", "interruptible", "now", "first"), [
    ("not interruptible: played whole, then the menu", False, OPEN, e.Play(S("ss-noservice"))),
    ("entry is a play node (holiday): a key stops it, nothing to choose", True, datetime(2025, 6, 9, 10, 0, tzinfo=UTC),
     e.Play(S("ss-noservice"), interruptible_by="0123456789*#")),
])
def test_announcement_slot_as_its_own_playback(name: str, interruptible: bool, now: datetime,
                                               first: e.Play) -> None:
    slot = f"announcement: {{interruptible: {str(interruptible).lower()}}}"
    built, issues = check_text(MENU.replace("announcement: {interruptible: true}", slot), "t.yaml", "t")
    assert built is not None, [i.format() for i in issues]
    commands = e.MenuRun(built).start(e.StartContext(now=now, announcement=("ss-noservice",)))
    assert commands[0] == first and len(commands) > 1
    if now == OPEN:
        assert commands[1:] == [MAIN]


def test_path_records_every_step_with_the_drivers_times(menu: Menu) -> None:
    run = e.MenuRun(menu)
    run.start(e.StartContext(now=OPEN))
    t0 = OPEN.timestamp()
    run.feed(e.DigitsEntered("9", at=t0 + 3))
    run.feed(e.InputTimedOut(at=t0 + 8))
    assert run.path == [
        e.PathEvent(e.PathKind.START, "main", t0, detail="open"),
        e.PathEvent(e.PathKind.ENTER, "main", t0),
        e.PathEvent(e.PathKind.INVALID, "main", t0 + 3, key="9"),
        e.PathEvent(e.PathKind.TIMEOUT, "main", t0 + 8),
        e.PathEvent(e.PathKind.FAILURE, "main", t0 + 8),
        e.PathEvent(e.PathKind.EXIT, "main", t0 + 8, target="general", detail="queue"),
    ]


def test_collected_digits_are_never_recorded(menu: Menu) -> None:
    run = e.MenuRun(menu)
    run.start(e.StartContext(now=OPEN))
    for ev in (D("1"), D("6"), D("12345"), D("9876")):
        run.feed(ev)
    recorded = " ".join(f"{p.key} {p.target} {p.detail}" for p in run.path)
    assert "12345" not in recorded and "9876" not in recorded
    assert [p.detail for p in run.path if p.kind is e.PathKind.COLLECTED] == ["acct:5", "pin:4"]


@pytest.mark.parametrize("event", [e.LookupDone({}), e.CallerIdentified("x"), e.CallbackScheduled(True)])
def test_an_event_the_run_does_not_wait_for_is_a_driver_bug(menu: Menu, event: e.Event) -> None:
    run = e.MenuRun(menu)
    run.start(e.StartContext(now=OPEN))
    with pytest.raises(e.UnexpectedEvent):
        run.feed(event)


def test_after_the_exit_only_a_hangup_is_accepted(menu: Menu) -> None:
    run = e.MenuRun(menu)
    run.start(e.StartContext(now=OPEN))
    run.feed(D("2"))
    assert run.feed(e.CallerHungUp()) == []
    assert run.exit is not None and run.exit.reason is e.ExitReason.QUEUE
    with pytest.raises(e.UnexpectedEvent):
        run.feed(D("1"))


@pytest.mark.parametrize(("events", "exit_reason", "served"), [
    ([("lookup", "found")], e.ExitReason.CALLER_HANGUP, True),
    ([("lookup", "missing")], e.ExitReason.CALLER_HANGUP, False),
    ([], e.ExitReason.CALLER_HANGUP, False),
    ([], e.ExitReason.SELF_SERVED, True),
    ([("lookup", "found")], e.ExitReason.QUEUE, False),
])
def test_served_by_ivr(events, exit_reason, served) -> None:
    path = [e.PathEvent(e.PathKind(kind), "balance", 1.0, detail=detail) for kind, detail in events]
    assert e.served_by_ivr(path, e.Exit(exit_reason, "balance")) is served
