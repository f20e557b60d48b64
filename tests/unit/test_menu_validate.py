"""The validator over a corpus of broken menu files: the exact message AND line:column of each issue.

Each file in menu_corpus/ holds one kind of mistake; EXPECTED lists everything `menus check` must say
about it (file name stripped), in order. The Asterisk side is a fixed set of sounds and queues.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ivrserver.domain import menu as m
from ivrserver.files import menus as mf

CORPUS = Path(__file__).resolve().parent / "menu_corpus"
HOTLINE = Path(__file__).resolve().parents[2] / "menus" / "hotline.yaml"
CHROOT_SOUNDS = Path("/var/cache/ivrserver/asterisk-root/usr/share/asterisk/sounds/en_US_f_Allison")
RESOURCES = m.Resources(
    sounds={"hello": 1.0, "goodbye": 1.0, "long-prompt": 30.0, "digits/1": 0.5},
    queues={"general", "billing", "faults", "sales", "vip"},
    timezones=mf.timezones(),
)

# ruff: noqa: E501 - the expected messages are kept whole, one per line
EXPECTED: dict[str, list[str]] = {
    "bad_key": [
        "6:7: error: nodes.main.options.10: key '10' is not allowed here (option keys are one phone key: 0-9, '*' or '#'; quote * and #)",
    ],
    "bad_type": [
        "8:11: error: nodes.amount.type: 'collct' is not allowed (did you mean 'collect'?)",
    ],
    "cycle_no_exit": [
        "4:1: warning: no route to a human: no menu offers '0', a queue or a transfer (the IVR serves about 78% of needs; the rest must reach a person)",
        '5:3: error: nodes.main: cycle with no exit: main → more → main (callers can never leave it: give one node an option or failure handler to a human)',
    ],
    "cycle_no_input": [
        '7:3: error: nodes.ping: cycle ping → pong → ping never waits for the caller',
    ],
    "dead_end": [
        "3:3: error: nodes.main: dead end: the menu offers no option (add options, or make it a 'play' node with 'next')",
    ],
    "duplicate_key": [
        "7:7: error: nodes.main.options.1: duplicate key '1' (first defined on line 6) (YAML keeps only the last one: remove or rename one)",
    ],
    "duplicate_node": [
        "6:3: error: nodes.main: duplicate key 'main' (first defined on line 3) (YAML keeps only the last one: remove or rename one)",
    ],
    "failure_hangup": [
        "8:25: error: nodes.main.handlers.failure: a failure handler must not hang up (callers whose input failed go to a human: remove it to use 'human')",
    ],
    "hours": [
        "6:5: error: hours.weekly.tues: key 'tues' is not allowed here (did you mean 'tue'?)",
    ],
    "hours_values": [
        "1:1: error: entry.closed: missing: 'hours' is set, so say which node callers reach outside them",
        '5:11: error: hours.weekly.mon.0: the range 18:00-08:00 ends before it starts',
        "6:14: error: hours.holidays.0: expected a date YYYY-MM-DD, got '2025-02-30'",
    ],
    "lint": [
        "4:1: warning: no route to a human: no menu offers '0', a queue or a transfer (the IVR serves about 78% of needs; the rest must reach a person)",
        '7:5: warning: nodes.l1: 6 options (more than 5) (callers forget long lists: split or drop options)',
        '15:5: warning: nodes.l2: prompts last about 30 s (more than 20 s) (callers abandon long prompts: shorten them)',
        '26:3: warning: nodes.l5: 5 levels deep (more than 4) (past 4 levels 52% of callers give up: flatten the menu)',
    ],
    "merge_and_alias": [
        "7:13: error: nodes.main.options.1: merge keys ('<<') are not supported (write the keys out; anchors and aliases of whole values are fine)",
    ],
    "missing_sound": [
        "4:22: error: nodes.main.prompts.1: sound file 'goodby' not found in the sounds directory (did you mean 'goodbye'?)",
    ],
    "timezone": [
        "3:13: error: hours.timezone: unknown time zone 'Asia/Shangai' (did you mean 'Asia/Shanghai'?)",
    ],
    "two_flows": [
        '6:12: error: nodes.main.options.1: an action takes exactly one of goto, back, repeat, queue, transfer, callback, hangup; got goto, queue',
        '7:12: error: nodes.main.options.2: an action takes exactly one of goto, back, repeat, queue, transfer, callback, hangup',
    ],
    "unknown_key": [
        "6:13: error: nodes.main.options.1.queu: unknown key 'queu' (did you mean 'queue'?)",
    ],
    "unknown_node": [
        "6:19: error: nodes.main.options.1: goto 'biling': no such node (did you mean 'billing'?)",
        '7:3: error: nodes.billing: unreachable: no entry or goto leads here',
    ],
    "unknown_queue": [
        "2:16: error: human: queue 'generl' is not defined in Asterisk's queues.conf (did you mean 'general'?)",
        "8:23: error: nodes.main.options.2: queue 'sale' is not defined in Asterisk's queues.conf (did you mean 'sales'?)",
    ],
    "unknown_variable": [
        "4:41: error: nodes.main.prompts.1: no collect or lookup node provides 'ammount' (did you mean 'amount'?)",
        "15:10: error: nodes.who.pin: no collect node fills variable 'pin' (allowed: amount)",
    ],
    "unreachable": [
        '7:3: error: nodes.forgotten: unreachable: no entry or goto leads here',
    ],
    "yaml_syntax": [
        "5:12: error: not valid YAML: expected ',' or ']', but got ':'",
    ],
}


def test_every_corpus_file_has_expectations() -> None:
    assert sorted(p.stem for p in CORPUS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus(name: str) -> None:
    menu, issues = mf.load_menu(CORPUS / f"{name}.yaml", RESOURCES)
    assert [i.format() for i in issues] == [f"{CORPUS / name}.yaml:{line}" for line in EXPECTED[name]]
    has_error = any(i.severity is m.Severity.ERROR for i in issues)
    assert (menu is None) == has_error  # warnings alone never reject a menu


def test_hotline_has_no_issue_without_asterisk_resources() -> None:
    menu, issues = mf.load_menu(HOTLINE, m.Resources(timezones=mf.timezones()))
    assert menu is not None and issues == []


def test_hotline_has_no_issue_against_the_real_asterisk_sounds() -> None:
    if not CHROOT_SOUNDS.is_dir():
        pytest.skip("the Asterisk chroot is not built (scripts/asterisk-chroot ensure)")
    resources, notes = mf.resources(str(CHROOT_SOUNDS), None)
    resources = m.Resources(sounds=resources.sounds, queues={"vip", "general", "billing", "faults", "sales"},
                            timezones=resources.timezones)
    menu, issues = mf.load_menu(HOTLINE, resources)
    assert notes == [] and menu is not None and issues == []
    assert max(m.levels(menu).values()) <= 3


def test_hotline_depth_is_at_most_three() -> None:
    menu, _ = mf.load_menu(HOTLINE)
    assert menu is not None
    assert max(m.levels(menu).values()) == 3


@pytest.mark.parametrize(("text", "message"), [
    ("", "1:1: error: the file is empty"),
    ("- a\n- b\n", "1:1: error: <top>: ['a', 'b'] is not of type 'object'"),
    ("a: &a [*a, *a]\n", "1:1: error: too large or too deeply nested once aliases are expanded (limit 20000 values, depth 40)"),
    ("entry: {open: main}\nnodes: {main: {options: {\"1\": {queue: general}}}}\nextra: 1\n",
     "3:1: error: extra: unknown key 'extra' (did you mean 'entry'?)"),
    ("entry: {open: main}\nnodes:\n  main:\n    options: {\"1\": {queue: general}}\n    tries: 0\n",
     "5:12: error: nodes.main.tries: 0 is less than the minimum of 1"),
    ("entry: {open: main}\nnodes:\n  main:\n    prompts: [../../etc/passwd]\n    options: {\"1\": {queue: general}}\n",
     "4:15: error: nodes.main.prompts.0: '../../etc/passwd' is not valid (a sound file name relative to the sounds directory, without extension, e.g. 'vm-intro' or 'digits/5')"),
    ("entry: {open: main}\nnodes:\n  main:\n    options: {\"1\": {transfer: \"PJSIP/a,b\"}}\n",
     "4:31: error: nodes.main.options.1.transfer: \'PJSIP/a,b\' is not valid (ring one agent\'s endpoint, e.g. PJSIP/agent1003)"),
])
def test_text_problems(text: str, message: str) -> None:
    menu, issues = mf.check_text(text, "x.yaml", "x")
    assert menu is None
    assert [i.format() for i in issues][:1] == [f"x.yaml:{message}"]
