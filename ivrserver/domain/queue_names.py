"""One name for a queue wherever a supervisor looks (issue 20): the menus' and routing's name
(`general`), never Asterisk's (`ivr-general`).

app_queue reads a `[general]` section of queues.conf as its global settings, so no Asterisk queue
can be called `general`: every queue ivrserver routes to is `ivr-<name>` in queues.conf. The prefix
is added and taken off here only; AMI events (wallboard, contact records, screen pops) come in
with Asterisk's name and leave with ours, and the reports' filters accept either.
"""

from __future__ import annotations

QUEUE_PREFIX = "ivr-"


def asterisk_queue(name: str) -> str:
    """The queues.conf name of ivrserver queue `name` ("general" → "ivr-general")."""
    return QUEUE_PREFIX + name


def ivr_queue(asterisk_name: str) -> str | None:
    """ivrserver's name for an Asterisk queue, None when it is not one of ours."""
    if not asterisk_name.startswith(QUEUE_PREFIX):
        return None
    return asterisk_name[len(QUEUE_PREFIX):] or None  # "ivr-" alone names nothing of ours


def queue_label(name: str) -> str:
    """The name a supervisor knows for a queue named either way: ours (`ivr-general` → `general`;
    `general` stays); a queue that is not ours keeps its Asterisk name."""
    return ivr_queue(name) or name
