"""Command line: `ivrserver run | doctor | config | menus … | customers … | callbacks … | db …`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ivrserver import __version__, config
from ivrserver.commands import load_settings

# Each feature module contributes its own sub-commands through `register(subparsers)`.
COMMAND_MODULES = ("doctor", "menus", "customers", "callbacks", "db")


def _run(args: argparse.Namespace) -> int:
    from ivrserver import app

    settings = load_settings(args.config)
    if settings is None:
        return 2
    return app.main(settings)


def _without_password(url: str) -> str:
    """`scheme://user:secret@host/…` → `scheme://user:***@host/…` (a DSN may carry a password)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _show_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if settings is None:
        return 2
    for key, _, _ in config.describe():
        value: object = settings
        for part in key.split("."):
            value = getattr(value, part)
        if key.endswith("secret") or (key == "security.pepper" and value):
            value = "***"
        elif key in ("postgres.dsn", "redis.url") and isinstance(value, str):
            value = _without_password(value)
        print(f"{key} = {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivrserver", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ivrserver {__version__}")
    parser.add_argument("-c", "--config", help="settings YAML (default: $IVRSERVER_CONFIG, else built-in defaults)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the server (FastAGI, AMI, web)")
    run.set_defaults(func=_run)
    show = sub.add_parser("config", help="print the effective settings")
    show.set_defaults(func=_show_config)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"ivrserver.commands.{name}")
        module.register(sub)
    _config_after_the_command(parser)
    return parser


def _config_after_the_command(parser: argparse.ArgumentParser) -> None:
    """`ivrserver doctor -c FILE` as well as `ivrserver -c FILE doctor`: every command accepts
    -c/--config after its name. SUPPRESS: a sub-parser default would overwrite the value already
    parsed before the command with None."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any("--config" in a.option_strings for a in sub._actions):
                    sub.add_argument("-c", "--config", default=argparse.SUPPRESS,
                                     help="settings YAML (as before the command)")
                _config_after_the_command(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ivrserver customers export | head`: the reader left. Python's documented recipe: point
        # stdout at /dev/null so the interpreter's final flush does not fail again, exit 1.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
