"""The pages' message catalogues (ivrserver/web/static/i18n/<lang>.json) against the pages.

Fails on: a key a page uses (data-i18n / data-i18n-attr in static/*.html, a "<section>.<key>"
string in static/*.js — t("desk.login.title"), say(node, "desk.notes.saved") …) missing from a
catalogue; a key in one language but not the other; placeholders ({name}) that differ between the
languages; a key no page uses; a malformed catalogue (sections, flat dotted keys, string values,
duplicate keys). A key built at run time ("reports.kind." + kind, `wallboard.conn.${state}`): for
the wallboard's and the reports' prefixes every possible completion is enumerated from where its
values come from (the report, table and column definitions of domain/reports.py, the agent and
incident states of the domain, the ordering policies, the labels record/reports.py gives rows) and
each must be in both catalogues; only those completions count as used. A page prefix of theirs with
no enumeration fails, so a new one brings its list. A desk prefix ("desk.state." + s) still counts
every catalogue key under it as used.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ivrserver.domain import i18n
from ivrserver.domain import incidents as inc
from ivrserver.domain import menu_stats as ms
from ivrserver.domain import reports as rp
from ivrserver.domain import wallboard as wb
from ivrserver.domain.model import AgentState
from ivrserver.record import reports as rec

STATIC = Path(__file__).resolve().parents[2] / "ivrserver" / "web" / "static"
CATALOGUES = STATIC / "i18n"
SECTIONS = ("common", "desk", "wallboard", "reports")
KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\}")
SECTION_RE = "|".join(SECTIONS)
# A full key in a JS string literal ('…', "…" or `…` without ${}).
JS_KEY = re.compile(r"""(["'`])((?:""" + SECTION_RE + r""")\.[a-z0-9_]+(?:\.[a-z0-9_]+)*)\1""")
# A key prefix completed at run time: "desk.state." + s  or  `wallboard.conn.${state}`.
_PREFIX = r"(?:" + SECTION_RE + r")\.(?:[a-z0-9_]+\.)*"
JS_PREFIX = re.compile(r"""(?:(["'])(""" + _PREFIX + r""")\1)|(?:`(""" + _PREFIX + r""")\$\{)""")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r}")
        seen[k] = v
    return seen


def load(lang: str) -> dict[str, Any]:
    return json.loads((CATALOGUES / f"{lang}.json").read_text(encoding="utf-8"), object_pairs_hook=_no_duplicates)


def flat(lang: str) -> dict[str, str]:
    """"<section>.<key>" → text; a key already written with its section prefix is taken as is."""
    out: dict[str, str] = {}
    for section, entries in load(lang).items():
        for k, v in entries.items():
            full = k if k.startswith(section + ".") else f"{section}.{k}"
            assert full not in out, f"{lang}: {full} twice (with and without its section prefix)"
            out[full] = v
    return out


class _Keys(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "data-i18n" and value:
                self.keys.add(value.strip())
            elif name == "data-i18n-attr" and value:
                for pair in value.split(";"):
                    attr, _, key = pair.partition(":")
                    assert attr.strip() and key.strip(), f"data-i18n-attr {value!r}: expected attr:key pairs"
                    self.keys.add(key.strip())


def pages() -> list[Path]:
    return sorted(p for p in [*STATIC.glob("*.html"), *STATIC.glob("*.js")] if ".min." not in p.name)


def used() -> tuple[dict[str, set[str]], set[str]]:
    """(key → the files naming it, prefixes completed at run time)."""
    keys: dict[str, set[str]] = {}
    prefixes: set[str] = set()
    for page in pages():
        text = page.read_text(encoding="utf-8")
        found: set[str] = set()
        if page.suffix == ".html":
            parser = _Keys()
            parser.feed(text)
            found = parser.keys
        else:
            found = {m.group(2) for m in JS_KEY.finditer(text)}
            prefixes |= {m.group(2) or m.group(3) for m in JS_PREFIX.finditer(text)}
        for key in found:
            keys.setdefault(key, set()).add(page.name)
    return keys, prefixes


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_catalogue_shape(lang: str) -> None:
    data = load(lang)
    assert tuple(data) == SECTIONS, f"{lang}.json: sections must be {SECTIONS} in that order, got {tuple(data)}"
    for section, entries in data.items():
        assert isinstance(entries, dict), f"{lang}.json: {section} must be an object"
        for k, v in entries.items():
            assert KEY.match(k), f"{lang}.json: {section}: key {k!r} must be flat and dotted (a-z 0-9 _ .)"
            assert isinstance(v, str), f"{lang}.json: {section}.{k} must be text"
            assert v.strip() or k.endswith("separator"), f"{lang}.json: {section}.{k} is empty"
            assert v.count("{") == v.count("}") == len(PLACEHOLDER.findall(v)), (
                f"{lang}.json: {section}.{k}: braces only around placeholder names: {v!r}")


def test_same_keys_in_every_language() -> None:
    en = set(flat("en"))
    for lang in i18n.LANGUAGES:
        other = set(flat(lang))
        assert not en - other, f"missing from {lang}.json: {sorted(en - other)}"
        assert not other - en, f"only in {lang}.json: {sorted(other - en)}"


def test_same_placeholders_in_every_language() -> None:
    en = flat("en")
    wrong = []
    for lang in i18n.LANGUAGES:
        for key, text in flat(lang).items():
            if key in en and set(PLACEHOLDER.findall(text)) != set(PLACEHOLDER.findall(en[key])):
                wrong.append(f"{lang}: {key}: {sorted(set(PLACEHOLDER.findall(text)))} "
                             f"vs en {sorted(set(PLACEHOLDER.findall(en[key])))}")
    assert not wrong, "placeholders differ:\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_every_key_a_page_uses_is_in_the_catalogue(lang: str) -> None:
    keys, _ = used()
    catalogue = flat(lang)
    missing = sorted(f"{k} ({', '.join(sorted(files))})" for k, files in keys.items() if k not in catalogue)
    assert not missing, f"keys used by pages but missing from {lang}.json:\n  " + "\n  ".join(missing)


def test_every_catalogue_key_is_used() -> None:
    keys, prefixes = used()
    built = completions()
    # under an enumerated prefix only its completions count; under a desk prefix every key does
    loose = [p for p in prefixes if p not in built]
    enumerated = set().union(*built.values())
    unused = sorted(k for k in flat("en") if k not in keys and k not in enumerated
                    and not any(k.startswith(p) for p in loose))
    assert not unused, "catalogue keys no page uses (remove them, or use them):\n  " + "\n  ".join(unused)


# ---- keys completed at run time: every completion, from the source of its values ----------------

def _js(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _js_list(name: str, const: str) -> tuple[str, ...]:
    """The strings of `const NAME = ["a", "b"]` in a page script."""
    m = re.search(r"const " + const + r" = \[([^\]]*)\]", _js(name))
    assert m, f"{name}: no const {const} = [...]"
    return tuple(re.findall(r'"([^"]+)"', m.group(1)))


def completions() -> dict[str, set[str]]:
    """Run-time prefix → every key the wallboard and the reports pages can build under it."""
    policies = [name.replace("-", "_") for name in ms.POLICIES]
    columns = {c for tables in rp.COLUMNS.values() for cols in tables.values() for c in cols}
    return {
        "reports.name.": {f"reports.name.{r}" for r in rp.REPORTS},
        "reports.table.": {f"reports.table.{r}.{t}" for r, tables in rp.TABLES.items() for t in tables},
        # every column the server builds, and the per-currency compensation column (one key, {currency})
        "reports.col.": {f"reports.col.{c}" for c in columns} | {"reports.col.compensation_cents"},
        "reports.exit.": {f"reports.exit.{c}" for c in rp.EXIT_CATEGORIES},
        "reports.kind.": {f"reports.kind.{k}" for k in rp.CALLBACK_KINDS},
        "reports.policy_name.": {f"reports.policy_name.{p}" for p in policies},
        "reports.policy_desc.": {f"reports.policy_desc.{p}" for p in policies},
        "wallboard.state.": {f"wallboard.state.{s}" for s in wb.AGENT_STATES},
        "wallboard.incident.state.": {f"wallboard.incident.state.{s}" for s in wb.ACTIVE_INCIDENT_STATES},
        "wallboard.conn.": {f"wallboard.conn.{c}" for c in re.findall(r'setConn\("([a-z_]+)"\)', _js("wallboard.js"))},
    }


def test_the_enumerations_follow_their_sources() -> None:
    """The lists completions() reads are the ones the server and the pages really use."""
    assert set(wb.AGENT_STATES) == {s.value for s in AgentState}
    assert {s.value for s in inc.ACTIVE_STATES} == wb.ACTIVE_INCIDENT_STATES
    assert set(rp.TABLES) == set(rp.REPORTS) == set(rp.COLUMNS)
    assert all(set(rp.TABLES[r]) == set(rp.COLUMNS[r]) for r in rp.REPORTS)
    # the kinds record/reports.py labels the callbacks report's rows with
    assert tuple(re.findall(r"SELECT '([a-z_]+)'", rec._CALLBACK_ROWS)) == rp.CALLBACK_KINDS
    assert re.fullmatch(r"compensation_[A-Z]{3}_cents", rp.compensation_column("cny"))
    # the pages' own lists of the same things
    assert _js_list("reports.js", "REPORTS") == rp.REPORTS
    assert _js_list("reports.js", "EXITS") == rp.EXIT_CATEGORIES
    assert _js_list("wallboard.js", "STATES") == wb.AGENT_STATES
    conn = completions()["wallboard.conn."]
    assert {"wallboard.conn.live", "wallboard.conn.off", "wallboard.conn.connecting"} <= conn


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_every_run_time_key_is_in_the_catalogue(lang: str) -> None:
    catalogue = flat(lang)
    missing = sorted(k for keys in completions().values() for k in keys if k not in catalogue)
    assert not missing, f"keys the wallboard or reports page can build but missing from {lang}.json:\n  " + \
        "\n  ".join(missing)


def test_every_wallboard_and_reports_prefix_is_enumerated() -> None:
    _, prefixes = used()
    ours = {p for p in prefixes if p.startswith(("wallboard.", "reports."))}
    assert ours, "the scanner finds the run-time prefixes of the wallboard and reports pages"
    loose = sorted(ours - set(completions()))
    assert not loose, f"run-time key prefixes with no list of completions (add them to completions()): {loose}"


def test_the_scanner_sees_pages() -> None:
    """The checks above mean something: the desk's own keys are found, with a run-time prefix."""
    keys, prefixes = used()
    assert {"desk.login.title", "desk.notes.saved", "common.unit.minutes"} <= set(keys)
    assert "desk.state." in prefixes
    assert "index.html" in keys["desk.login.title"]


# ---- choosing the language (domain/i18n.py) ----------------------------------------------------

@pytest.mark.parametrize(("header", "expected"), [
    (None, None),
    ("", None),
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    ("en-US,en;q=0.9", "en"),
    ("fr-FR, de;q=0.9", None),
    ("fr-FR, zh-TW;q=0.5, en;q=0.4", "zh"),
    ("en;q=0.3, zh;q=0.7", "zh"),
    ("zh;q=0, en;q=0.1", "en"),  # q=0: "not acceptable"
    ("ZH-hans-CN", "zh"),
    ("*", None),
    ("en;q=abc, zh;q=0.2", "zh"),  # a broken weight drops that range only
    ("en;q=2", None),  # out of range
    ("en, zh", "en"),  # ties: the first listed
    ("x" * 2000, None),  # hostile length: ignored
    (",,;;==", None),
])
def test_negotiate_accept_language(header: str | None, expected: str | None) -> None:
    assert i18n.negotiate(header) == expected


@pytest.mark.parametrize(("stored", "default", "header", "expected"), [
    ("zh", "en", "en", ("zh", "agent")),
    (None, "zh", "en-US", ("zh", "setting")),
    (None, "auto", "zh-CN,en;q=0.5", ("zh", "browser")),
    (None, "auto", "fr", ("en", "fallback")),
    (None, "auto", None, ("en", "fallback")),
    ("fr", "auto", "zh", ("zh", "browser")),  # an unknown stored value is ignored
])
def test_choose(stored: str | None, default: str, header: str | None, expected: tuple[str, str]) -> None:
    assert i18n.choose(stored, default, header) == expected


@pytest.mark.parametrize(("value", "error"), [
    ("zh", None),
    ("en", None),
    ("ZH", "language must be one of en, zh, got 'ZH'"),
    ("zh-CN", "language must be one of en, zh, got 'zh-CN'"),
    ("", "language must be one of en, zh, got ''"),
    (None, "language must be a string, one of en, zh"),
    (["zh"], "language must be a string, one of en, zh"),
    ("<script>" * 10, "language must be one of en, zh, got '<script><script>'"),
    ("\x00zh", "language must be one of en, zh, got '\\\\x00zh'"),
])
def test_check_language(value: object, error: str | None) -> None:
    if error is None:
        assert i18n.check_language(value) == value
    else:
        with pytest.raises(i18n.LanguageInvalid) as exc:
            i18n.check_language(value)
        assert str(exc.value) == error
