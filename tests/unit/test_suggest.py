"""The one "did you mean" of settings, menus and routing (domain/suggest.py)."""

import pytest

from ivrserver.domain.suggest import closest, did_you_mean

KEYS = ("action_timeout", "host", "ping_interval", "port", "reconnect_max_delay", "secret")


@pytest.mark.parametrize(("word", "choices", "expected"), [
    ("prot", KEYS, "port"),                       # transposition
    ("hots", KEYS, "host"),
    ("Asia/Shangai", ["Asia/Shanghai", "Asia/Singapore"], "Asia/Shanghai"),
    ("port", KEYS, "port"),                       # an exact word is its own closest
    ("xyz", KEYS, None),                          # nothing near
    ("", KEYS, None),
    (None, KEYS, None),                           # a YAML value that is not text
    (42, ["42"], None),
    ("prot", [], None),
    ("vipp", ["vip", "gold", "standard"], "vip"),
])
def test_closest(word: object, choices: list[str], expected: str | None) -> None:
    assert closest(word, choices) == expected


def test_closest_does_not_depend_on_the_order_of_choices() -> None:
    choices = ["abcx", "abcy", "abcz"]               # all equally close to "abc"
    assert closest("abc", choices) == closest("abc", list(reversed(choices))) == "abcz"


@pytest.mark.parametrize(("word", "choices", "kwargs", "expected"), [
    ("prot", KEYS, {}, "did you mean 'port'?"),
    ("vipp", ["vip", "gold"], {"quote": '"'}, 'did you mean "vip"?'),
    ("xyz", KEYS, {}, ""),                                          # no list unless asked
    ("xyz", ["b", "a", "a"], {"list_up_to": 12}, "allowed: a, b"),  # sorted, no duplicates
    ("xyz", KEYS, {"list_up_to": 5}, ""),                           # too many to list
    ("xyz", [], {"list_up_to": 12}, ""),
    (None, ["a"], {"list_up_to": 12}, "allowed: a"),
])
def test_did_you_mean(word: object, choices: list[str], kwargs: dict[str, object], expected: str) -> None:
    assert did_you_mean(word, choices, **kwargs) == expected  # type: ignore[arg-type]
