"""Sub-commands of the `ivrserver` CLI, one module per feature."""

from __future__ import annotations

import sys

from ivrserver import config


def load_settings(path: str | None) -> config.Settings | None:
    """The settings for a command, or None after printing every problem (the command exits 2)."""
    try:
        return config.load(path)
    except config.ConfigError as exc:
        print(exc, file=sys.stderr)
        return None
