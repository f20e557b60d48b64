""""Did you mean …?" for a misspelt name: the one closest choice, for every validator.

Settings (`config.py`), menus (`domain/menu.py`, `files/menus.py`) and routing
(`domain/routing.py`, `files/routing.py`) all phrase their hints through here, so a
near miss is judged the same way everywhere: difflib's ratio of at least 0.6, one match.

    >>> did_you_mean("prot", ["host", "port", "secret"])
    "did you mean 'port'?"
    >>> did_you_mean("vipp", ["vip", "gold"], quote='"')
    'did you mean "vip"?'
    >>> did_you_mean("xyz", ["a", "b"], list_up_to=12)
    'allowed: a, b'
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# difflib's own default: "prot"→"port", "biling"→"billing", "Asia/Shangai"→"Asia/Shanghai" pass,
# unrelated words do not.
CUTOFF = 0.6


def closest(word: object, choices: Iterable[str]) -> str | None:
    """The choice closest to `word` when it is close enough, else None (also for non-text words)."""
    if not isinstance(word, str) or not word:
        return None
    # get_close_matches breaks ties by the larger string, so the answer does not depend on the
    # order of `choices`; the set only drops duplicates.
    pool = list({c for c in choices if isinstance(c, str)})
    match = difflib.get_close_matches(word, pool, n=1, cutoff=CUTOFF)
    return match[0] if match else None


def did_you_mean(word: object, choices: Iterable[str], *, quote: str = "'", list_up_to: int = 0) -> str:
    """"did you mean 'x'?" for the closest choice; else "allowed: a, b, c" when there are at
    most `list_up_to` choices (0: never); else ""."""
    pool = sorted({c for c in choices if isinstance(c, str)})
    match = closest(word, pool)
    if match is not None:
        return f"did you mean {quote}{match}{quote}?"
    if pool and len(pool) <= list_up_to:
        return "allowed: " + ", ".join(pool)
    return ""
