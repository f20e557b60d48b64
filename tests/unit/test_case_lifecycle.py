"""The case lifecycle (domain/cases.py): moves, why, checklist, due times, hand-offs, results, bodies."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ivrserver.domain import cases as rules
from ivrserver.domain.cases import ActionDef, CasePolicy, CaseRuleError
from ivrserver.domain.model import Case, CaseStatus, ChecklistItem

S = CaseStatus
T0 = 1_700_000_000.0
HOUR = 3600.0
POLICY = CasePolicy(due_hours={1: 4, 2: 24, 3: 72},
                    actions={"cancel_partner_charge": ActionDef("cancel_partner_charge", "Cancel the charge",
                                                                "partner-billing")})


def case(status: S = S.OPEN, **kw: Any) -> Case:
    base = Case(id="7", customer_id="c1", status=status, summary="premium SMS", opened_at=T0, severity=2,
                due_at=T0 + 24 * HOUR)
    return dataclasses.replace(base, **kw)


# --- moves -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("start", "to", "why", "kind"), [
    (S.OPEN, S.IN_PROGRESS, "", "moved"),
    (S.OPEN, S.CLOSED, "", "closed"),  # the old open → closed stays valid
    (S.OPEN, S.RESOLVED, "refunded", "resolved"),
    (S.IN_PROGRESS, S.WAITING_CUSTOMER, "needs the bill", "moved"),
    (S.IN_PROGRESS, S.WAITING_BACKOFFICE, "partner asked", "moved"),
    (S.WAITING_CUSTOMER, S.IN_PROGRESS, "", "moved"),
    (S.WAITING_BACKOFFICE, S.RESOLVED, "charge cancelled", "resolved"),
    (S.RESOLVED, S.CLOSED, "", "closed"),
    (S.RESOLVED, S.IN_PROGRESS, "charge is back", "reopened"),
    (S.CLOSED, S.IN_PROGRESS, "customer called again", "reopened"),
])
def test_allowed_moves(start: S, to: S, why: str, kind: str) -> None:
    step = rules.move(case(start), to, why=why, now=T0 + 10, policy=POLICY)
    assert (step.case.status, step.kind, step.why) == (to, kind, why)
    assert step.detail == {"from": start.value, "to": to.value}
    assert step.case.updated_at == T0 + 10


@pytest.mark.parametrize(("start", "to", "field", "conflict"), [
    (S.CLOSED, S.RESOLVED, "status", True),
    (S.CLOSED, S.WAITING_CUSTOMER, "status", True),
    (S.RESOLVED, S.WAITING_BACKOFFICE, "status", True),
    (S.OPEN, S.OPEN, "status", True),
    (S.IN_PROGRESS, S.OPEN, "status", True),  # nothing goes back to open
    (S.IN_PROGRESS, S.WAITING_CUSTOMER, "why", False),  # waiting needs a why
    (S.IN_PROGRESS, S.RESOLVED, "why", False),
    (S.CLOSED, S.IN_PROGRESS, "why", False),  # reopening needs a why
])
def test_refused_moves(start: S, to: S, field: str, conflict: bool) -> None:
    with pytest.raises(CaseRuleError) as err:
        rules.move(case(start), to, why="   ", now=T0, policy=POLICY)
    assert (err.value.field, err.value.conflict) == (field, conflict)


def test_reopen_gets_a_fresh_due_time_and_why_is_one_line() -> None:
    step = rules.move(case(S.CLOSED), S.IN_PROGRESS, why="  called\nagain ", now=T0 + 100 * HOUR, policy=POLICY)
    assert step.case.due_at == T0 + 124 * HOUR and step.why == "called again"


@pytest.mark.parametrize(("current", "value", "expected"), [
    (S.CLOSED, "open", S.IN_PROGRESS), (S.RESOLVED, "open", S.IN_PROGRESS), (S.OPEN, "open", S.OPEN),
    (S.WAITING_BACKOFFICE, "open", S.WAITING_BACKOFFICE), (S.OPEN, "resolved", S.RESOLVED),
])
def test_requested_status_reads_the_old_open(current: S, value: str, expected: S) -> None:
    assert rules.requested_status(current, value) is expected


def test_update_edits_and_moves_in_one_step_and_severity_moves_the_due_time() -> None:
    step = rules.update(case(), {"severity": 1, "next_step": "call partner"}, "in_progress", why="", now=T0 + 5,
                        policy=POLICY)
    assert step is not None and step.kind == "moved"
    assert step.case.due_at == T0 + 4 * HOUR and step.case.next_step == "call partner"
    assert step.detail == {"from": "open", "to": "in_progress", "severity": 1, "next_step": "call partner"}
    assert rules.update(case(), {"summary": "premium SMS"}, None, why="", now=T0, policy=POLICY) is None
    assert rules.update(case(), {"summary": "x"}, None, why="", now=T0, policy=POLICY).kind == "updated"  # type: ignore[union-attr]


@pytest.mark.parametrize(("status", "due", "now", "overdue"), [
    (S.OPEN, T0 + 10, T0 + 11, True),
    (S.WAITING_BACKOFFICE, T0 + 10, T0 + 11, True),
    (S.OPEN, T0 + 10, T0 + 10, False),
    (S.RESOLVED, T0 + 10, T0 + 11, False),
    (S.CLOSED, T0 + 10, T0 + 11, False),
    (S.OPEN, None, T0 + 11, False),
])
def test_overdue(status: S, due: float | None, now: float, overdue: bool) -> None:
    assert rules.is_overdue(case(status, due_at=due), now) is overdue


@pytest.mark.parametrize(("severity", "due"), [(1, T0 + 4 * HOUR), (3, T0 + 72 * HOUR), (5, None)])
def test_due_by_severity(severity: int, due: float | None) -> None:
    assert rules.due_at(T0, severity, POLICY) == due


def test_old_cases_are_open_unless_closed() -> None:
    assert rules.is_open(case(S.OPEN)) and rules.is_open(case(S.RESOLVED)) and not rules.is_open(case(S.CLOSED))


# --- checklist -------------------------------------------------------------------------------------

def test_checklist_add_tick_untick() -> None:
    step = rules.checklist_step(case(), add=[("copy of the bill", "customer"), ("partner confirms", "backoffice")],
                                done=[], undone=[], by="agent:a1", why="", now=T0 + 1)
    assert step is not None and step.kind == "checklist"
    assert [(i.id, i.source, i.done) for i in step.case.checklist] == [("1", "customer", False),
                                                                       ("2", "backoffice", False)]
    ticked = rules.checklist_step(step.case, add=[], done=["1"], undone=[], by="agent:a1", why="", now=T0 + 2)
    assert ticked is not None and ticked.case.checklist[0] == ChecklistItem("1", "copy of the bill", "customer", True,
                                                                            "agent:a1", T0 + 2)
    assert rules.open_items(ticked.case) == [ticked.case.checklist[1]]
    assert rules.checklist_step(ticked.case, add=[], done=["1"], undone=[], by="x", why="", now=T0) is None
    back = rules.checklist_step(ticked.case, add=[], done=[], undone=["1"], by="x", why="", now=T0 + 3)
    assert back is not None and back.case.checklist[0].done is False and back.case.checklist[0].done_by is None
    with pytest.raises(CaseRuleError, match="no item '9'"):
        rules.checklist_step(step.case, add=[], done=["9"], undone=[], by="x", why="", now=T0)
    with pytest.raises(CaseRuleError):
        rules.checklist_step(case(S.CLOSED), add=[("x", "customer")], done=[], undone=[], by="x", why="", now=T0)


def test_checklist_ids_stay_unique_and_bounded() -> None:
    c = case(checklist=(ChecklistItem("2", "a"),))
    updated, [item] = rules.add_items(c, [("b", "customer")], now=T0)
    assert item.id == "3" and {i.id for i in updated.checklist} == {"2", "3"}
    with pytest.raises(CaseRuleError):
        rules.add_items(c, [("x", "customer")] * rules.MAX_CHECKLIST, now=T0)
    with pytest.raises(CaseRuleError):
        rules.new_checklist([("x", "partner")])


# --- hand-off and results --------------------------------------------------------------------------

def test_hand_off_waits_on_the_back_office_and_its_result_resolves() -> None:
    step = rules.hand_off(case(S.IN_PROGRESS), "cancel_partner_charge", {"partner": "SP-1"}, to="partner-billing",
                          why="", now=T0 + 1, policy=POLICY)
    assert step.kind == "action_requested" and step.case.status is S.WAITING_BACKOFFICE
    assert step.case.handed_to == ("partner-billing",) and step.why == "Cancel the charge"
    assert step.detail["params"] == {"partner": "SP-1"} and step.detail["to"] == "partner-billing"
    assert [(i.source, i.done) for i in step.case.checklist] == [("backoffice", False)]
    assert rules.may_backoffice_see(step.case, "partner-billing") and not rules.may_backoffice_see(step.case, "crm")

    result = rules.backoffice_result(step.case, "partner-billing", "charge cancelled", resolve=True, done=[],
                                     now=T0 + 2, policy=POLICY)
    assert result.kind == "resolved" and result.case.status is S.RESOLVED and result.why == "charge cancelled"
    assert result.case.checklist[0].done and result.case.checklist[0].done_by == "backoffice:partner-billing"
    partial = rules.backoffice_result(step.case, "partner-billing", "bill checked", resolve=False, done=[],
                                      now=T0 + 2, policy=POLICY)
    assert partial.kind == "backoffice_result" and partial.case.status is S.IN_PROGRESS
    with pytest.raises(CaseRuleError):
        rules.backoffice_result(step.case, "crm", "x", resolve=True, done=[], now=T0, policy=POLICY)
    closed = dataclasses.replace(step.case, status=S.CLOSED)
    assert not rules.may_backoffice_see(closed, "partner-billing")


@pytest.mark.parametrize(("status", "action", "to", "field"), [
    (S.OPEN, "refund_everything", None, "action"),
    (S.OPEN, "cancel_partner_charge", "crm", "to"),
    (S.RESOLVED, "cancel_partner_charge", None, "status"),
    (S.CLOSED, "cancel_partner_charge", None, "status"),
])
def test_hand_off_refused(status: S, action: str, to: str | None, field: str) -> None:
    with pytest.raises(CaseRuleError) as err:
        rules.hand_off(case(status), action, {}, to=to, why="", now=T0, policy=POLICY)
    assert err.value.field == field


def test_noted_keeps_the_status() -> None:
    step = rules.noted(case(S.RESOLVED), "notice", {"notice_id": "n1", "outcome": "heard"}, why="", now=T0 + 9)
    assert step.case.status is S.RESOLVED and step.kind == "notice" and step.case.updated_at == T0 + 9
    with pytest.raises(CaseRuleError):
        rules.noted(case(), "bogus", {}, why="", now=T0)


# --- request bodies --------------------------------------------------------------------------------

@pytest.mark.parametrize(("parse", "body", "fields"), [
    (rules.parse_move, {"status": "open"}, ["status"]),
    (rules.parse_move, {"status": "resolved", "why": 5}, ["why"]),
    (rules.parse_move, {"status": "resolved", "why": "ok\x00"}, ["why"]),
    (rules.parse_move, {"status": "closed", "evil": 1}, ["evil"]),
    (rules.parse_move, [], ["body"]),
    (rules.parse_checklist, {}, ["body"]),
    (rules.parse_checklist, {"add": [{"text": ""}]}, ["add[0].text"]),
    (rules.parse_checklist, {"add": [{"text": "x", "from": "partner"}]}, ["add[0].from"]),
    (rules.parse_checklist, {"add": [{"text": "x", "evil": 1}]}, ["add[0]"]),
    (rules.parse_checklist, {"done": ["1; DROP"]}, ["done"]),
    (rules.parse_checklist, {"add": [{"text": "x"}] * 51}, ["add"]),
    (rules.parse_action, {"action": "../etc"}, ["action"]),
    (rules.parse_action, {"action": "a", "params": {"k": {"nested": 1}}}, ["params.k"]),
    (rules.parse_action, {"action": "a", "params": {"bad key": 1}}, ["params"]),
    (rules.parse_action, {"action": "a", "params": {f"k{i}": i for i in range(21)}}, ["params"]),
    (rules.parse_result, {"result": ""}, ["result"]),
    (rules.parse_result, {"result": "ok", "resolve": "yes"}, ["resolve"]),
    (rules.parse_result, {"result": "x" * 1001}, ["result"]),
])
def test_hostile_bodies(parse: Any, body: Any, fields: list[str]) -> None:
    parsed, problems = parse(body)
    assert parsed is None and [f for f, _ in problems] == fields


def test_good_bodies() -> None:
    assert rules.parse_move({"status": "resolved", "why": " done "}) == ({"status": S.RESOLVED, "why": "done"}, [])
    parsed, _ = rules.parse_checklist({"add": [{"text": "bill", "from": "backoffice"}], "done": ["1"]})
    assert parsed == {"add": [("bill", "backoffice")], "done": ["1"], "undone": [], "why": ""}
    parsed, _ = rules.parse_action({"action": "cancel_partner_charge", "params": {"n": 2, "s": "SP", "b": True}})
    assert parsed is not None and parsed["params"] == {"n": 2, "s": "SP", "b": True} and parsed["to"] is None
    assert rules.parse_result({"result": "charge cancelled", "resolve": True})[0] == {
        "result": "charge cancelled", "resolve": True, "done": []}


# --- the screen-pop shows the lifecycle ------------------------------------------------------------

def test_the_pop_shows_every_case_not_closed_with_what_is_still_needed() -> None:
    from ivrserver.domain.screen_pop import PopContext, Role, build_pop

    waiting = case(S.WAITING_BACKOFFICE, id="8", severity=1, due_at=T0 + 10, handed_to=("partner-billing",),
                   checklist=(ChecklistItem("1", "partner confirms", "backoffice"),
                              ChecklistItem("2", "bill copy", "customer", True, "agent:a1", T0)),
                   compensated_cents=3000, currency="CNY")
    cases = (case(S.RESOLVED, id="9"), waiting, case(S.CLOSED, id="10"))
    pop = build_pop(PopContext(call_id="x", number="1", open_cases=cases), role=Role.AGENT, now=T0 + 11)
    assert [c["id"] for c in pop["open_cases"]] == ["8", "9"]
    entry = pop["open_cases"][0]
    assert (entry["status"], entry["overdue"], entry["handed_to"]) == ("waiting_backoffice", True, ["partner-billing"])
    assert entry["open_items"] == [{"id": "1", "text": "partner confirms", "from": "backoffice"}]
    assert (entry["compensated_cents"], entry["currency"]) == (3000, "CNY")
    assert pop["open_cases"][1]["overdue"] is False  # resolved: never overdue
