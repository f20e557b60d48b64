"""The menu side of incidents, pure: an option naming a `service:` is recorded as a fault report;
an incident offer at entry runs instead of the menu (tables of events → commands)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from ivrserver.domain import menu_engine as e
from ivrserver.domain.menu import Menu
from ivrserver.domain.model import CallerSnapshot
from ivrserver.files.menus import check_text
from ivrserver.pbx.fastagi import AgiHangup
from ivrserver.services.ivr_call import run_menu
from ivrserver.services.menus import MenuVersion
from tests.unit.test_ivr_call import FakeChannel

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
HELLO = e.Collect((e.Sound("hello"),), 1, 5000, 3000)
FAULTS = e.Collect((e.Sound("faults"),), 1, 5000, 3000)

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
    ("hangs up after it played to its end", [e.CallerHungUp(prompts_played=True)], [], e.ExitReason.CALLER_HANGUP,
     "heard"),
    ("hangs up after pressing 1", [e.DigitsEntered("1"), e.CallerHungUp()], [], e.ExitReason.CALLER_HANGUP, "hung_up"),
]


@pytest.mark.parametrize(("name", "events", "last", "reason", "outcome"), OFFERS, ids=[o[0] for o in OFFERS])
def test_incident_offer(menu: Menu, name: str, events: list[e.Event], last: list[e.Command],
                        reason: e.ExitReason, outcome: str) -> None:
    run, first = run_events(menu, [])
    assert first == [HELLO]
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


# another key than 1 or 0: on to the menu, the key as its first choice ('*': the menu from its start)
TO_MENU = [
    ("star: the menu from its start", "*", [HELLO], [e.PathKind.ENTER], "main"),
    ("3: the menu's option 3 at once (type-ahead)", "3", [FAULTS],
     [e.PathKind.ENTER, e.PathKind.KEY, e.PathKind.ENTER], "faults"),
    ("7: not an option of the menu: its invalid-key handling", "7", [HELLO], [e.PathKind.ENTER, e.PathKind.INVALID],
     "main"),
]


@pytest.mark.parametrize(("name", "key", "last", "kinds", "node"), TO_MENU, ids=[t[0] for t in TO_MENU])
def test_another_key_goes_on_to_the_menu(menu: Menu, name: str, key: str, last: list[e.Command],
                                         kinds: list[e.PathKind], node: str) -> None:
    run, out = run_events(menu, [e.DigitsEntered(key)], OFFER)
    assert out[-1:] == last and run.node == node and run.exit is None
    after = [p for p in run.path if p.kind is not e.PathKind.START][2:]  # after the offer and the key
    assert [p.kind for p in after] == kinds
    assert e.incident_outcome(run.path) == ("inc-1", "menu")


def test_the_habitual_fault_report_during_an_offer_is_counted_by_the_menu(menu: Menu) -> None:
    """3 4 1 typed by habit over the announcement: 3 leaves it for the menu's faults, 1 there is the
    report (the menu's own action follows: here a queue); not sent to the queue by the announcement."""
    run, out = run_events(menu, [e.DigitsEntered("3"), e.DigitsEntered("1")], OFFER)
    assert e.reported_services(run.path) == ("mobile_data",)
    assert e.incident_outcome(run.path) == ("inc-1", "menu")
    assert not [p for p in run.path if p.kind is e.PathKind.INCIDENT and p.target.startswith("queue:")]
    assert out[-1] == e.Transfer("faults", 2, "ivr:faults:1")  # this menu's report, not the announcement's


# (outcome, served by the IVR = contact self_served, exit as statistics count it, absorbed)
ABSORBED = [
    ("subscribed", [e.DigitsEntered("1"), e.Subscribed(True)], True, "self_served", True),
    ("heard", [e.CallerHungUp(prompts_played=True)], True, "self_served", True),
    ("hung_up", [e.CallerHungUp()], False, "caller_hangup", False),
    ("agent", [e.InputTimedOut()], False, "queue", False),
    ("menu", [e.DigitsEntered("*"), e.CallerHungUp(prompts_played=True)], False, "caller_hangup", False),
]


@pytest.mark.parametrize(("outcome", "events", "served", "counted", "absorbed"), ABSORBED,
                         ids=[a[0] for a in ABSORBED])
def test_one_rule_for_the_contact_and_the_figures(menu: Menu, outcome: str, events: list[e.Event], served: bool,
                                                  counted: str, absorbed: bool) -> None:
    """Absorbed by the announcement (pressed 1, or heard it to its end and hung up) is what the
    contact record calls self-served; hung up during it is abandoned in both."""
    run, _ = run_events(menu, events, OFFER)
    assert run.exit is not None
    heard = e.incident_outcome(run.path)
    assert heard is not None and heard[1] == outcome
    assert (heard[1] in e.ABSORBED) is absorbed
    assert e.served_by_ivr(run.path, run.exit) is served
    assert e.counted_exit(run.exit.reason.value, run.path) == counted
    summary = e.exit_summary(run.path, run.exit)
    if outcome == "heard":
        assert summary == "ivr exit self_served at incident (heard incident announcement inc-1 to its end, hung up)"
    else:
        assert summary == f"ivr exit {run.exit.reason.value} at {'main' if outcome == 'menu' else 'incident'}"


class HangsUpDuring(FakeChannel):
    """The caller hangs up while `file` plays (STREAM FILE result=-1, then res_agi's HANGUP)."""

    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    async def stream_file(self, file: str, escape_digits: str = "") -> str | None:
        await super().stream_file(file, escape_digits)
        if file == self.file:
            self.hungup = True
            raise AgiHangup("STREAM FILE: caller hung up")
        return None


SPOKEN = e.IncidentOffer("inc-1", prompts={"en": (e.Spoken("we know", "en", "clip-know"),
                                                  e.Spoken("press 1", "en", "clip-offer"))},
                         thanks={"en": (e.Spoken("thanks", "en", "clip-thanks"),)}, queue="faults")


@pytest.mark.parametrize(("channel", "outcome"), [
    (lambda: FakeChannel(), "heard"),  # both clips played, the wait for the key cut short
    (lambda: HangsUpDuring("clip-offer"), "hung_up"),
    (lambda: HangsUpDuring("clip-know"), "hung_up"),
], ids=["after the announcement", "during the offer", "during the announcement"])
async def test_the_playback_tells_whether_the_announcement_was_heard_to_its_end(
        menu: Menu, channel: Callable[[], FakeChannel], outcome: str) -> None:
    async def subscribe(incident_id: str, customer_id: str | None) -> bool:
        return True

    ch = channel()
    version = MenuVersion("v1", 0.0, {"hotline": menu})
    done = await run_menu(ch, version, CallerSnapshot(number="+8613904210000"), None, NOW.timestamp(),
                          menu="hotline", incident=SPOKEN, subscribe=subscribe)
    assert done.exit is not None and done.exit.reason is e.ExitReason.CALLER_HANGUP
    assert e.incident_outcome(done.path) == ("inc-1", outcome)
    assert e.served_by_ivr(done.path, done.exit) is (outcome == "heard")
