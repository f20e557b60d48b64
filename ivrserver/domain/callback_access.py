"""Who may see, change and place which callbacks. Pure: stdlib and domain only.

- Supervisors, back-office tokens and the system itself (the IVR's "press 2", the CLI run by an
  operator with Redis access) see and change every callback.
- An agent sees and changes only a callback they requested, that prefers them, or whose customer
  they hold a live access grant for (the grant a screen-pop opens: see store/grants.py).
- Placing a call with no agent on the line (customer-first / notification) or to a number that is
  not on the customer's record needs a supervisor or a back-office token: an agent cannot use the
  hotline as a free dialler.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass


class Role(enum.StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    BACKOFFICE = "backoffice"  # a named back-office token (web.backoffice_tokens_file)
    SYSTEM = "system"  # the IVR, the CLI


@dataclass(frozen=True)
class Actor:
    """Who asks: an agent's id, a back-office token's name, or the system part that acts."""

    id: str
    role: Role
    source: str = ""  # where the request came from (remote address), for the audit log

    @property
    def privileged(self) -> bool:
        return self.role is not Role.AGENT

    @property
    def requester(self) -> str:
        """What `requested_by` records for a callback this actor requests."""
        return f"backoffice:{self.id}" if self.role is Role.BACKOFFICE else self.id


SYSTEM_IVR = Actor("ivr", Role.SYSTEM)
SYSTEM_CLI = Actor("cli", Role.SYSTEM)


def visible_because(actor: Actor, *, customer_id: str, requested_by: str | None, preferred_agent: str | None,
                    granted: Collection[str]) -> str | None:
    """Why `actor` may see and change a callback, or None when they may not.

    `granted`: the customer ids the (agent) actor holds a live access grant for."""
    if actor.privileged:
        return actor.role.value
    if requested_by is not None and requested_by == actor.id:
        return "requested it"
    if preferred_agent is not None and preferred_agent == actor.id:
        return "preferred agent"
    if customer_id in granted:
        return "handling this customer"
    return None


def _digits(number: str) -> str:
    return "".join(c for c in number if c.isdigit())


def number_on_record(number: str, phones: Iterable[str]) -> bool:
    """Whether `number` is one of the customer's phone numbers. Both sides come from the one phone
    normaliser; digits are compared so '+86…' and '86…' forms of one number still match."""
    wanted = _digits(number)
    return bool(wanted) and any(_digits(p) == wanted for p in phones)


def placement_refusal(actor: Actor, *, customer_first: bool, number: str,
                      customer_phones: Iterable[str] | None) -> str | None:
    """Why `actor` may not request this call, or None when they may.

    `customer_phones` None: no such customer on record (then no number is on its record)."""
    if actor.privileged:
        return None
    if customer_first:
        return ("a customer-first call (no agent on the line) needs a supervisor or a back-office token")
    if customer_phones is None:
        return "no such customer on record: calling a number for it needs a supervisor or a back-office token"
    if not number_on_record(number, customer_phones):
        return ("the number is not on the customer's record: calling it needs a supervisor or a "
                "back-office token")
    return None
