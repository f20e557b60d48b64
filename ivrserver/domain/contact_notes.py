"""The one rule for what an agent writes on a contact record after a call.

Both `PUT /api/v1/contacts/{id}` (any of disposition / notes) and the agent desktop's
`POST /api/v1/contacts/{id}/notes` (notes and disposition, optionally a change to one of the
caller's cases) are validated here and saved by one use case (`services.customers`).

- disposition: one of `DISPOSITIONS` (the vocabulary reports count by), or `fault:<service>`
  naming a fault service of the incidents policy (incidents.yaml `services`, given as
  `fault_services`): the call was about that fault, counted as a complaint like the IVR's report.
  On the partial update an empty string or null clears it.
- notes: text up to `MAX_NOTES` characters, new lines (LF, CR) and tabs allowed, no other control
  characters; surrounding blanks are dropped.
- case (write-back only): `id` (a case id), `status` "open" | "closed", `next_step` and
  `still_needed` up to 500 characters each (one line).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ivrserver.domain.customer_validation import FieldError

DISPOSITIONS = ("resolved", "follow_up", "escalated", "callback_scheduled", "no_action", "wrong_number",
                "other")
MAX_NOTES = 4000
MAX_CASE_TEXT = 500
NOTE_FIELDS = ("disposition", "notes")
CASE_FIELDS = ("id", "status", "next_step", "still_needed")
CASE_STATUSES = ("open", "closed")
CASE_ID_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
FAULT_PREFIX = "fault:"
SERVICE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")  # as domain/incidents.SERVICE_RE


def fault_service(disposition: str) -> str | None:
    """The service a `fault:<service>` disposition names, else None."""
    if not disposition.startswith(FAULT_PREFIX):
        return None
    service = disposition[len(FAULT_PREFIX):]
    return service if SERVICE_RE.fullmatch(service) else None


@dataclass(frozen=True)
class CaseChange:
    """Changes to one of the caller's cases that come with a write-back (None: unchanged)."""

    case_id: str
    status: str | None = None  # "open" | "closed"
    next_step: str | None = None
    still_needed: str | None = None


@dataclass(frozen=True)
class NoteChange:
    """What to set on the contact record (only the given fields), and optionally on a case."""

    fields: dict[str, str]
    case: CaseChange | None = None


def _control(text: str, *, multiline: bool) -> bool:
    return any((ord(ch) < 32 and not (multiline and ch in "\n\r\t")) or 0x7F <= ord(ch) < 0xA0 for ch in text)


def _text(errors: list[FieldError], field: str, value: Any, *, max_len: int, multiline: bool) -> str | None:
    if not isinstance(value, str):
        errors.append(FieldError(field, "must be text"))
        return None
    value = value.strip()
    if len(value) > max_len:
        errors.append(FieldError(field, f"must be at most {max_len} characters"))
        return None
    if _control(value, multiline=multiline):
        errors.append(FieldError(field, "must not contain control characters"))
        return None
    return value


def _disposition(errors: list[FieldError], value: Any, *, required: bool,
                 fault_services: Collection[str]) -> str | None:
    if (value is None or value == "") and not required:
        return ""
    if isinstance(value, str) and (value in DISPOSITIONS or fault_service(value) in fault_services):
        return value
    faults = f", or fault:<service> with a service of {', '.join(fault_services)}" if fault_services else ""
    errors.append(FieldError("disposition", f"must be one of {', '.join(DISPOSITIONS)}{faults}"))
    return None


def _case(errors: list[FieldError], data: Any) -> CaseChange | None:
    if not isinstance(data, Mapping):
        errors.append(FieldError("case", "must be an object"))
        return None
    case_id = data.get("id")
    if not isinstance(case_id, str) or not CASE_ID_RE.fullmatch(case_id):
        errors.append(FieldError("case.id", "is required: the id of one of the caller's cases"))
    status = data.get("status")
    if status is not None and status not in CASE_STATUSES:
        errors.append(FieldError("case.status", "must be 'open' or 'closed'"))
    texts: dict[str, str | None] = {}
    for name in ("next_step", "still_needed"):
        value = data.get(name)
        texts[name] = None if value is None else _text(errors, f"case.{name}", value, max_len=MAX_CASE_TEXT,
                                                          multiline=False)
    if errors:
        return None
    return CaseChange(case_id=str(case_id), status=status, next_step=texts["next_step"],
                      still_needed=texts["still_needed"])


def validate(data: Any, *, write_back: bool,
             fault_services: Collection[str] = ()) -> tuple[NoteChange | None, list[FieldError]]:
    """A contact note from an untrusted body. `write_back=False` (PUT /contacts/{id}): at least one
    of disposition / notes, only those. `write_back=True` (the agent desktop): notes and
    disposition required, plus an optional `case`. `fault_services`: the services a `fault:`
    disposition may name (none: no fault dispositions)."""
    errors: list[FieldError] = []
    if not isinstance(data, Mapping):
        return None, [FieldError("contact", "must be an object")]
    if not write_back:  # the desktop's body may carry more (ignored there, as it always was)
        errors += [FieldError(str(k), f"unknown field; allowed: {', '.join(NOTE_FIELDS)}")
                   for k in data if k not in NOTE_FIELDS]
        if not data:
            errors.append(FieldError("contact", f"give at least one of {', '.join(NOTE_FIELDS)}"))
    fields: dict[str, str] = {}
    if write_back or "disposition" in data:
        disposition = _disposition(errors, data.get("disposition"), required=write_back,
                                   fault_services=fault_services)
        if disposition is not None:
            fields["disposition"] = disposition
    if write_back and data.get("notes") is None:
        errors.append(FieldError("notes", "is required"))
    elif "notes" in data:
        notes = "" if data["notes"] is None else _text(errors, "notes", data["notes"], max_len=MAX_NOTES,
                                                       multiline=True)
        if notes is not None:
            fields["notes"] = notes
    case = None
    if write_back and data.get("case") is not None:
        case = _case(errors, data["case"])
    if errors:
        return None, errors
    return NoteChange(fields=fields, case=case), []
