"""domain/contact_notes.py: one rule for PUT /contacts/{id} and the agent desktop's write-back."""

from __future__ import annotations

from typing import Any

import pytest

from ivrserver.domain import contact_notes
from ivrserver.domain.contact_notes import DISPOSITIONS, CaseChange, NoteChange


def fields_of(data: Any, *, write_back: bool) -> list[str]:
    return [e.field for e in contact_notes.validate(data, write_back=write_back)[1]]


@pytest.mark.parametrize(("data", "fields"), [
    ({"disposition": "resolved", "notes": "line 1\nline 2"}, []),
    ({"disposition": "follow_up"}, []),
    ({"notes": "refund"}, []),
    ({"disposition": None}, []),  # clears it
    ({"disposition": ""}, []),
    ({"notes": "\x07"}, ["notes"]),
    ({"outcome": "answered"}, ["outcome"]),
    ({}, ["contact"]),
    ([], ["contact"]),
    ({"disposition": "angry customer"}, ["disposition"]),  # free text: not one of the vocabulary
    ({"disposition": "<script>"}, ["disposition"]),
    ({"disposition": 5}, ["disposition"]),
    ({"notes": "x" * 4001}, ["notes"]),
    ({"notes": "x", "case": {"id": "1"}}, ["case"]),  # a case only with the write-back
])
def test_partial_update(data: Any, fields: list[str]) -> None:
    assert fields_of(data, write_back=False) == fields


@pytest.mark.parametrize(("data", "fields"), [
    ({"notes": "x", "disposition": "resolved"}, []),
    ({"notes": "a\r\nb\tc", "disposition": "other"}, []),
    ({"notes": "x", "disposition": "resolved", "extra": 1}, []),  # the desktop may send more: ignored
    ({"notes": "x", "disposition": "<script>"}, ["disposition"]),
    ({"notes": "x"}, ["disposition"]),
    ({"disposition": "resolved"}, ["notes"]),
    ({"notes": 5, "disposition": "resolved"}, ["notes"]),
    ({"notes": "x" * 4001, "disposition": "resolved"}, ["notes"]),
    ({"notes": "a\u0000b", "disposition": "resolved"}, ["notes"]),
    ({"notes": "x", "disposition": "resolved", "case": "K1"}, ["case"]),
    ({"notes": "x", "disposition": "resolved", "case": {"id": "../../K1"}}, ["case.id"]),
    ({"notes": "x", "disposition": "resolved", "case": {}}, ["case.id"]),
    ({"notes": "x", "disposition": "resolved", "case": {"id": "1", "status": "deleted"}}, ["case.status"]),
    ({"notes": "x", "disposition": "resolved", "case": {"id": "1", "next_step": "y" * 501}}, ["case.next_step"]),
    ({"notes": "x", "disposition": "resolved", "case": {"id": "1", "still_needed": "a\nb"}}, ["case.still_needed"]),
])
def test_write_back(data: Any, fields: list[str]) -> None:
    assert fields_of(data, write_back=True) == fields


def test_both_routes_accept_the_same_dispositions() -> None:
    for disposition in DISPOSITIONS:
        assert fields_of({"disposition": disposition}, write_back=False) == []
        assert fields_of({"disposition": disposition, "notes": ""}, write_back=True) == []
    for wrong in ("Resolved", "resolved ", "refund granted", "x" * 200):
        assert fields_of({"disposition": wrong}, write_back=False) == ["disposition"]
        assert fields_of({"disposition": wrong, "notes": ""}, write_back=True) == ["disposition"]


def test_values() -> None:
    assert contact_notes.validate({"notes": "  refund \n", "disposition": None}, write_back=False) == (
        NoteChange(fields={"disposition": "", "notes": "refund"}), [])
    note, _ = contact_notes.validate({"notes": "n", "disposition": "escalated",
                                      "case": {"id": "7", "status": "closed", "next_step": "call"}}, write_back=True)
    assert note == NoteChange(fields={"disposition": "escalated", "notes": "n"},
                              case=CaseChange(case_id="7", status="closed", next_step="call"))


FAULTS = ("mobile_data", "broadband")


@pytest.mark.parametrize(("disposition", "services", "ok"), [
    ("fault:mobile_data", FAULTS, True),
    ("fault:broadband", FAULTS, True),
    ("fault:fixed_line", FAULTS, False),  # not a service of the incidents policy
    ("fault:mobile_data", (), False),  # incidents off: no fault dispositions
    ("fault:", FAULTS, False),
    ("fault", FAULTS, False),
    ("fault:Mobile-Data", ("Mobile-Data",), False),  # not a service name at all
    ("fault:mobile_data\n", FAULTS, False),
    ("resolved", FAULTS, True),
])
def test_a_fault_disposition_names_a_service_of_the_incidents_policy(disposition: str, services: tuple[str, ...],
                                                                     ok: bool) -> None:
    for write_back in (True, False):
        note, errors = contact_notes.validate({"disposition": disposition, "notes": "n"}, write_back=write_back,
                                              fault_services=services)
        assert (note is not None) is ok, errors
        if note is not None:
            assert note.fields["disposition"] == disposition
        else:
            assert [e.field for e in errors] == ["disposition"]
    if ok:  # what save_note counts the complaint for
        expected = disposition.removeprefix("fault:") if disposition.startswith("fault:") else None
        assert contact_notes.fault_service(disposition) == expected
