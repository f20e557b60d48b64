"""The menu side of incidents, pure: an option naming a `service:` is recorded as a fault report;
an incident offer at entry runs instead of the menu (tables of events → commands)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ivrserver.domain import menu_engine as e
from ivrserver.domain.menu import Menu
from ivrserver.files.menus import check_text

MENU = """
human: {queue: general}
entry: {open: main}
nodes:
  main:
    prompts: [hello]
    options:
      "3": {goto: faults}
  faults:
    prompts: [faults]
    options:
      "1": {service: mobile_data, play: [noted], queue: faults, priority: 2}
      "2": {service: broadband, goto: main}
"""
NOW = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def menu() -> Menu:
    built, issues = check_text(MENU, "t.yaml", "t")
    assert built is not None, [i.format() for i in issues]
    return built


def run_events(menu: Menu, events: list[e.Event], incident: e.IncidentOffer | None = None,
               language: str = "") -> tuple[e.MenuRun, list[e.Command]]:
    run = e.MenuRun(menu)
    out = run.start(e.StartContext(now=NOW, incident=incident, language=language))
    for event in events:
        out = run.feed(event)
    return run, out


@pytest.mark.parametrize(("keys", "services"), [
    (["3", "1"], ("mobile_data",)),
    (["3", "2", "3", "1"], ("broadband", "mobile_data")),
    (["3", "2", "3", "2"], ("broadband",)),
    ([], ()),
])
def test_fault_options_are_recorded(menu: Menu, keys: list[str], services: tuple[str, ...]) -> None:
    run, _ = run_events(menu, [e.DigitsEntered(k) for k in keys])
    assert e.reported_services(run.path) == services


def test_bad_service_name_is_a_menu_error() -> None:
    built, issues = check_text(MENU.replace("service: broadband", "service: Broad-Band"), "t.yaml", "t")
    assert built is None
    assert any("service" in i.format() for i in issues), [i.format() for i in issues]


OFFER = e.IncidentOffer(
    "inc-1", prompts={"en": (e.Spoken("we know", "en", "clip-en"),), "zh": (e.Spoken("我们已获悉", "zh", "clip-zh"),)},
    thanks={"en": (e.Spoken("thanks", "en", "t-en"),), "zh": (e.Spoken("谢谢", "zh", "t-zh"),)},
    queue="faults", priority=2, timeout_ms=4000)
FIRST = e.Collect((e.Spoken("we know", "en", "clip-en"),), max_digits=1, timeout_ms=4000, digit_timeout_ms=4000)

# (events after start, commands of the last step, exit reason, outcome)
OFFERS = [
    ("press 1: subscribed", [e.DigitsEntered("1"), e.Subscribed(True)],
     [e.Play((e.Spoken("thanks", "en", "t-en"),)), e.Hangup("self_served")], e.ExitReason.SELF_SERVED, "subscribed"),
    ("press 1, store refused: to the queue", [e.DigitsEntered("1"), e.Subscribed(False)],
     [e.Transfer("faults", 2, "ivr:incident:stayed")], e.ExitReason.QUEUE, "agent"),
    ("stays on the line", [e.InputTimedOut()], [e.Transfer("faults", 2, "ivr:incident:stayed")],
     e.ExitReason.QUEUE, "agent"),
    ("presses 0", [e.DigitsEntered("0")], [e.Transfer("faults", 2, "ivr:incident:0")], e.ExitReason.QUEUE, "agent"),
    ("hangs up while it plays", [e.CallerHungUp()], [], e.ExitReason.CALLER_HANGUP, "hung_up"),
    ("hangs up after pressing 1", [e.DigitsEntered("1"), e.CallerHungUp()], [], e.ExitReason.CALLER_HANGUP, "hung_up"),
]


@pytest.mark.parametrize(("name", "events", "last", "reason", "outcome"), OFFERS, ids=[o[0] for o in OFFERS])
def test_incident_offer(menu: Menu, name: str, events: list[e.Event], last: list[e.Command],
                        reason: e.ExitReason, outcome: str) -> None:
    run, first = run_events(menu, [])
    assert first == [e.Collect((e.Sound("hello"),), 1, 5000, 3000)]
    run, out = run_events(menu, events, OFFER)
    assert out == last
    assert run.exit is not None and run.exit.reason is reason
    assert e.incident_outcome(run.path) == ("inc-1", outcome)


def test_offer_starts_instead_of_the_menu_in_the_calls_language(menu: Menu) -> None:
    run = e.MenuRun(menu)
    assert run.start(e.StartContext(now=NOW, incident=OFFER)) == [FIRST]
    run = e.MenuRun(menu)
    first = run.start(e.StartContext(now=NOW, incident=OFFER, language="zh"))
    assert first == [e.Collect((e.Spoken("我们已获悉", "zh", "clip-zh"),), 1, 4000, 4000)]
    run, out = run_events(menu, [e.DigitsEntered("1")], OFFER)
    assert out == [e.Subscribe("inc-1")]
    with pytest.raises(e.UnexpectedEvent):
        run.feed(e.DigitsEntered("1"))
