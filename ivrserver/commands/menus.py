"""`ivrserver menus check | simulate | stats | reload`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ivrserver import config
from ivrserver.commands import load_settings
from ivrserver.domain import menu as m
from ivrserver.domain import menu_engine as e
from ivrserver.domain import menu_stats as ms
from ivrserver.domain import speech
from ivrserver.files import menus as menu_files
from ivrserver.services import menu_stats as stats_service
from ivrserver.services.ivr_call import local_time
from ivrserver.services.speech import SpeechRenderer


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("menus", help="check, simulate, measure and reload the IVR menus")
    sub = parser.add_subparsers(dest="menus_command", required=True)

    p = sub.add_parser("check", help="validate and lint menu files (exit 1 on errors)")
    p.add_argument("path", nargs="?", help="a menu file or directory (default: menus.dir)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--sounds-dir", help="Asterisk sounds directory (default: asterisk.sounds_dir if present)")
    p.add_argument("--queues-conf", help="Asterisk queues.conf (default: asterisk.config_dir/queues.conf if present)")
    p.add_argument("--queue-prefix", default="ivr-",
                   help="Asterisk queue = prefix + menu queue name, as the dialplan does (default: ivr-)")
    p.add_argument("--language", default="en", help="sounds language subdirectory (default: en)")
    p.add_argument("--no-render", action="store_true",
                   help="do not synthesize text prompts (no voice, synthesizer or duration checks)")
    p.set_defaults(func=run_check)

    p = sub.add_parser("simulate", help="walk a menu in the terminal, no Asterisk needed")
    p.add_argument("menu", help="menu name in menus.dir, or a path to a menu file")
    p.add_argument("--caller", default="", help="calling number (shown; with --redis, looked up)")
    p.add_argument("--keys", help="comma-separated inputs, e.g. 1,3,#; 't' is a timeout; "
                                  "interactive when absent")
    p.add_argument("--data", action="append", default=[], metavar="FIELD=VALUE",
                   help="the caller's data for lookups, e.g. balance=42 (repeatable)")
    p.add_argument("--redis", action="store_true", help="look the caller up in Redis (redis.url)")
    p.add_argument("--identify", choices=["ok", "failed", "locked"], default="ok",
                   help="what account + PIN identification answers (default ok)")
    p.add_argument("--callback", choices=["accept", "decline"], default="accept")
    p.add_argument("--at", help="local time for opening hours, ISO 8601 (default: now)")
    p.add_argument("--announce", default="", help="comma-separated announcement sounds")
    p.add_argument("--lang", default="", help="the call's language at start, e.g. zh (default: the menu's)")
    p.set_defaults(func=run_simulate)

    p = sub.add_parser("stats", help="per-node traffic and a suggested option order from recorded calls")
    p.add_argument("--menu", help="menu name (default: menus.entry)")
    p.add_argument("--redis-url", help="read the paths Redis holds at this URL, even with postgres.dsn set "
                                       "(default: PostgreSQL when postgres.dsn is set, else redis.url)")
    p.add_argument("--days", type=float, default=30.0, help="look back this many days (default 30)")
    p.add_argument("--policy", choices=sorted(ms.POLICIES), default=ms.ThirdFourthFirst().name)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=run_stats)

    p = sub.add_parser("reload", help="ask the running server to reload its menus")
    p.add_argument("--url", help="server base URL (default: http://web.host:web.port)")
    p.add_argument("--token", help="bearer token (default: $IVRSERVER_TOKEN)")
    p.set_defaults(func=run_reload)


# ---------------------------------------------------------------------------------------------
# check


def run_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings = load_settings(getattr(args, "config", None))
    if settings is None:
        return 2
    target = Path(args.path or settings.menus.dir)
    sounds_dir = args.sounds_dir
    if sounds_dir is None and Path(settings.asterisk.sounds_dir).is_dir():
        sounds_dir = settings.asterisk.sounds_dir
    queues_conf = args.queues_conf
    default_queues = Path(settings.asterisk.config_dir) / "queues.conf"
    if queues_conf is None and default_queues.is_file():
        queues_conf = str(default_queues)
    resources, notes = menu_files.resources(sounds_dir, queues_conf, args.language, args.queue_prefix)
    if sounds_dir is None:
        notes.append("sounds not checked: no sounds directory (--sounds-dir)")
    if queues_conf is None:
        notes.append("queues not checked: no queues.conf (--queues-conf)")
    try:
        files = menu_files.menu_files(target)
    except OSError as exc:
        print(f"{target}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    renderer = None if args.no_render else SpeechRenderer.from_settings(settings.prompts, sounds_dir)
    issues: list[m.Issue] = []
    for path in files:
        issues += menu_files.load_menu(path, resources, renderer)[1]
    errors = sum(1 for i in issues if i.severity is m.Severity.ERROR)
    warnings = len(issues) - errors
    if args.format == "json":
        json.dump({"files": [str(f) for f in files], "errors": errors, "warnings": warnings,
                   "issues": [i.as_dict() for i in issues], "notes": notes}, out, indent=2)
        out.write("\n")
    else:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        for issue in issues:
            print(issue.format(), file=out)
        print(f"{len(files)} file(s): {errors} error(s), {warnings} warning(s)", file=out)
    if not files:
        return 1
    return 1 if errors else 0


# ---------------------------------------------------------------------------------------------
# simulate


def _prompt_text(p: e.Prompt) -> str:
    if isinstance(p, e.Sound):
        return p.file
    if isinstance(p, e.Spoken):
        return f"«{p.text}» ({p.language})"
    return f"<say {p.kind} {p.value}>"


VOCABULARY = frozenset(speech.ZH_VOCABULARY)


def _prompts_text(prompts: tuple[e.Prompt, ...]) -> str:
    """Prompts as the simulator prints them; a number said word by word reads as one text."""
    merged: list[e.Prompt] = []
    for p in prompts:
        last = merged[-1] if merged else None
        if isinstance(p, e.Spoken) and isinstance(last, e.Spoken) and last.language == p.language \
                and len(p.text) == 1 and len(last.text) <= 24 and set(last.text + p.text) <= VOCABULARY:
            merged[-1] = e.Spoken(last.text + p.text, p.language)
        else:
            merged.append(p)
    return ", ".join(_prompt_text(p) for p in merged)


def describe(cmd: e.Command) -> str:
    """One line per command, as the simulator prints it."""
    if isinstance(cmd, e.Play):
        skip = " (any key skips)" if cmd.interruptible_by else ""
        return f"play {_prompts_text(cmd.prompts)}{skip}"
    if isinstance(cmd, e.Collect):
        term = f", end with {cmd.terminator}" if cmd.terminator else ""
        return (f"play {_prompts_text(cmd.prompts) or '-'} and wait for up to "
                f"{cmd.max_digits} key(s), {cmd.timeout_ms / 1000:g} s{term}")
    if isinstance(cmd, e.Lookup):
        return f"look up the caller's {', '.join(cmd.fields)}"
    if isinstance(cmd, e.Identify):
        return f"identify account {cmd.account} with a {len(cmd.pin)}-digit PIN"
    if isinstance(cmd, e.SetLanguage):
        return f"switch language to {cmd.language}"
    if isinstance(cmd, e.Transfer):
        return f"→ queue {cmd.queue} (priority {cmd.priority}) [{cmd.reason}]"
    if isinstance(cmd, e.ToAgent):
        return (f"→ agent {cmd.endpoint} for {cmd.ring_seconds} s, then queue {cmd.fallback_queue} "
                f"[{cmd.reason}]")
    if isinstance(cmd, e.OfferCallback):
        return f"offer a callback from queue {cmd.queue} [{cmd.reason}]"
    return f"hang up ({cmd.reason})"


def simulate(menu: m.Menu, *, now: datetime, inputs: Iterator[str | None], data: dict[str, str],
             identify: str = "ok", callback: str = "accept", announcement: tuple[str, ...] = (),
             language: str = "", out: TextIO) -> e.MenuRun:
    """Drive a MenuRun from scripted inputs (a digit string, '' for a timeout, None: hang up)."""
    run = e.MenuRun(menu)
    commands = run.start(e.StartContext(now=now, announcement=announcement, language=language))
    clock = now.timestamp()
    while commands:
        event: e.Event | None = None
        for cmd in commands:
            print(f"[{run.node}] {describe(cmd)}", file=out)
            clock += 1.0
            if isinstance(cmd, e.Collect):
                key = next(inputs, None)
                if key is None:
                    print("  caller hangs up", file=out)
                    run.feed(e.CallerHungUp(clock))
                    return run
                key = key.strip()
                print(f"  caller {'presses ' + key if key else 'presses nothing (timeout)'}", file=out)
                event = e.DigitsEntered(key, clock) if key else e.InputTimedOut(clock)
            elif isinstance(cmd, e.Lookup):
                values = {f: data.get(f) for f in cmd.fields}
                print(f"  found {values}", file=out)
                event = e.LookupDone(values, clock)
            elif isinstance(cmd, e.Identify):
                print(f"  identification: {identify}", file=out)
                event = (e.CallerIdentified("simulated", clock) if identify == "ok"
                         else e.IdentificationFailed(identify == "locked", clock))
            elif isinstance(cmd, e.OfferCallback):
                print(f"  caller {callback}s the callback", file=out)
                event = e.CallbackScheduled(callback == "accept", clock)
        commands = run.feed(event) if event is not None else []
    if run.exit is not None:
        x = run.exit
        print(f"exit: {x.reason} at node {x.node}" + (f" (queue {x.queue})" if x.queue else ""), file=out)
    return run


def _interactive(out: TextIO) -> Iterator[str | None]:
    while True:
        try:
            line = input("keys (empty: timeout, q: hang up)> ")
        except EOFError:
            return
        if line.strip().lower() == "q":
            return
        if any(c not in m.DTMF_KEYS for c in line.strip()):
            print("  only 0-9, * and # are phone keys", file=out)
            continue
        yield line.strip()


def _scripted(spec: str) -> Iterator[str | None]:
    for token in spec.split(","):
        token = token.strip()
        yield "" if token.lower() in ("t", "timeout", "") else token


def _load(menu_arg: str, settings: config.Settings) -> tuple[m.Menu | None, list[m.Issue]]:
    path = Path(menu_arg)
    if not path.is_file():
        path = Path(settings.menus.dir) / f"{menu_arg}.yaml"
    return menu_files.load_menu(path)


def run_simulate(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings = load_settings(getattr(args, "config", None))
    if settings is None:
        return 2
    menu, issues = _load(args.menu, settings)
    if menu is None:
        for issue in issues:
            print(issue.format(), file=sys.stderr)
        return 1
    tokens = [t.strip() for t in (args.keys or "").split(",")]
    if args.keys is not None and not all(t.lower() in ("", "t", "timeout") or set(t) <= set(m.DTMF_KEYS)
                                         for t in tokens):
        print("--keys: use phone keys 0-9, * and # separated by commas ('t' for a timeout)", file=sys.stderr)
        return 2
    data: dict[str, str] = {}
    for item in args.data:
        field, sep, value = item.partition("=")
        if not sep:
            print(f"--data: expected FIELD=VALUE, got {item!r}", file=sys.stderr)
            return 2
        data[field] = value
    if args.redis and args.caller:
        data = {**_customer_data(settings, args.caller), **data}
    if args.at:
        try:
            now = datetime.fromisoformat(args.at)
        except ValueError:
            print(f"--at: not an ISO 8601 time: {args.at!r}", file=sys.stderr)
            return 2
    else:
        now = local_time(menu, time.time())
    print(f"menu {menu.name} ({menu.file}), caller {args.caller or 'unknown'}, local time "
          f"{now.isoformat(timespec='minutes')}", file=out)
    inputs = _scripted(args.keys) if args.keys is not None else _interactive(out)
    announcement = tuple(s for s in args.announce.split(",") if s)
    if args.lang and not m.LANGUAGE_RE.match(args.lang):
        print(f"--lang: expected a language code such as zh or en, got {args.lang!r}", file=sys.stderr)
        return 2
    simulate(menu, now=now, inputs=inputs, data=data, identify=args.identify, callback=args.callback,
             announcement=announcement, language=args.lang, out=out)
    return 0


def _customer_data(settings: config.Settings, number: str) -> dict[str, str]:
    return asyncio.run(stats_service.caller_data(settings, number))


# ---------------------------------------------------------------------------------------------
# stats


def format_stats(stats: ms.MenuStats, policy: ms.OrderingPolicy) -> str:
    lines = [f"menu {stats.menu}: {stats.calls} call(s), {stats.finished} finished"]
    served, human = stats.exits[e.ExitReason.SELF_SERVED], stats.human
    lines.append(f"self-served {served}, to a human {human}: self-service share "
                 f"{stats.self_served_share:.0%} (target {ms.SELF_SERVICE_TARGET:.0%}); "
                 f"abandoned in the IVR {stats.abandon_rate:.0%}")
    lines.append("depth reached: " + ", ".join(f"{d}: {n}" for d, n in sorted(stats.depth.items())))
    reasons = [str(r) for r in e.ExitReason]
    header = f"{'node':<20}{'entries':>8}{'avg s':>7}{'abandon':>8}{'invalid':>8}{'timeout':>8}" + "".join(
        f"{r[:9]:>10}" for r in reasons)
    lines += ["", header, "-" * len(header)]
    for st in sorted(stats.nodes.values(), key=lambda s: -s.entries):
        lines.append(f"{st.node:<20}{st.entries:>8}{st.average_seconds:>7.1f}{st.abandon_rate:>8.0%}"
                     f"{st.invalid:>8}{st.timeouts:>8}" + "".join(f"{st.exits[r]:>10}" for r in reasons))
    lines += ["", f"suggested option order (policy {policy.name}: {policy.description})"]
    if not stats.suggestions:
        lines.append("  not enough traffic on menus with two or more options")
    for sug in stats.suggestions:
        traffic = ", ".join(f"{k}={n}" for k, n in zip(sug.current, sug.counts, strict=True))
        order = ", ".join(f"{slot}: {what}" for slot, what in sug.suggested)
        lines.append(f"  {sug.node}: traffic {traffic} → {order}")
    return "\n".join(lines)


def stats_dict(stats: ms.MenuStats) -> dict[str, Any]:
    return {
        "menu": stats.menu, "calls": stats.calls, "finished": stats.finished, "exits": dict(stats.exits),
        "self_served_share": stats.self_served_share, "target": ms.SELF_SERVICE_TARGET,
        "abandon_rate": stats.abandon_rate, "depth": {str(k): v for k, v in stats.depth.items()},
        "policy": stats.policy,
        "nodes": {n: {"entries": s.entries, "average_seconds": s.average_seconds, "abandon_rate": s.abandon_rate,
                      "invalid": s.invalid, "timeouts": s.timeouts, "failures": s.failures,
                      "exits": dict(s.exits), "keys": dict(s.keys)} for n, s in stats.nodes.items()},
        "suggestions": [{"node": s.node, "traffic": dict(zip(s.current, s.counts, strict=True)),
                         "order": [{"key": k, "does": w} for k, w in s.suggested]} for s in stats.suggestions],
    }


def run_stats(args: argparse.Namespace, out: TextIO | None = None,
              clock: Callable[[], float] = time.time) -> int:
    import asyncpg
    import redis.exceptions

    out = out or sys.stdout
    settings = load_settings(getattr(args, "config", None))
    if settings is None:
        return 2
    menu = args.menu or settings.menus.entry
    url = args.redis_url or settings.redis.url
    policy = ms.POLICIES[args.policy]

    if not args.days > 0:
        print(f"--days: expected a positive number, got {args.days}", file=sys.stderr)
        return 2
    until = clock()
    try:
        window = asyncio.run(stats_service.window_counts(settings, menu, until - args.days * 86400, until,
                                                         redis_url=args.redis_url))
    except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
        where = "PostgreSQL (postgres.dsn)" if settings.postgres.dsn and not args.redis_url else url
        print(f"cannot read IVR paths from {where}: {exc}", file=sys.stderr)
        return 2
    except asyncpg.PostgresError as exc:
        print(f"cannot read IVR paths from PostgreSQL (postgres.dsn): {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    stats = ms.summarize(menu, window.tally, policy)
    since_text = datetime.fromtimestamp(window.since).isoformat(" ", "seconds")
    if window.source == "postgres":
        source = f"every call since {since_text}, counted in PostgreSQL (rollups and paths)"
    else:
        source = (f"{window.read} path(s) read from Redis since {since_text}: all it holds for the window "
                  f"(it keeps paths for redis.retention_days; set postgres.dsn for the system of record)")
    if args.format == "json":
        json.dump({**stats_dict(stats), "source": window.source, "since": window.since, "until": window.until,
                   "paths_read": window.read}, out, indent=2)
        out.write("\n")
    else:
        print(format_stats(stats, policy), file=out)
        print(f"\nsource: {source}", file=out)
    return 0


# ---------------------------------------------------------------------------------------------
# reload


def run_reload(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings = load_settings(getattr(args, "config", None))
    if settings is None:
        return 2
    base = (args.url or f"http://{settings.web.host}:{settings.web.port}").rstrip("/")
    if not base.startswith(("http://", "https://")):
        print(f"--url: expected http:// or https://, got {base!r}", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("IVRSERVER_TOKEN")
    req = urllib.request.Request(f"{base}/api/v1/menus/reload", method="POST", data=b"")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read().decode("utf-8"))
        except ValueError:
            print(f"reload failed: HTTP {exc.code}", file=sys.stderr)
            return 2
        if exc.code != 422:
            print(f"reload failed: HTTP {exc.code}: {body.get('error', body)}", file=sys.stderr)
            return 2
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"cannot reach the server at {base}: {exc}", file=sys.stderr)
        return 2
    for kind in ("errors", "warnings"):
        for item in body.get(kind, []):
            print(m.Issue(**{**item, "severity": m.Severity(item["severity"])}).format(), file=out)
    if body.get("ok"):
        state = "new version" if body.get("changed") else "unchanged"
        print(f"reloaded: {state} {body.get('version')}", file=out)
        return 0
    print(f"rejected: version {body.get('version') or '<none>'} stays live", file=out)
    return 1
