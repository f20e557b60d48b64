"""The server-side pepper that keys PIN hashes: where it comes from, never where it goes.

Order: `security.pepper_file` (a file, at least 32 characters, surrounding whitespace ignored),
else `security.pepper` (meant for the environment: IVRSERVER_SECURITY__PEPPER), else the
development pepper at `security.dev_pepper_file`, generated on first use (32 random bytes as hex,
mode 0600, directory 0700) so that `make run`, the tests and `customers import` share one without
any setup. `ivrserver doctor` warns while the development pepper is in use.

The pepper is never logged, stored in Redis or exported; losing it makes every PIN hash useless
(customers then need a new PIN), so back the file up with the Redis data.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ivrserver.config import SecuritySettings
from ivrserver.domain.hashing import Pepper

log = logging.getLogger("ivrserver.pepper")
MIN_LENGTH = 32


class PepperError(Exception):
    """The configured pepper cannot be read or is too short (the message says which setting)."""


@dataclass(frozen=True)
class PepperSource:
    pepper: Pepper
    origin: str       # "security.pepper_file", "security.pepper" or "security.dev_pepper_file"
    path: str | None  # the file it came from
    development: bool


def _read(path: Path, key: str) -> bytes:
    try:
        data = path.read_bytes().strip()
    except OSError as exc:
        raise PepperError(f"{key}: cannot read {path}: {exc.strerror}") from exc
    if len(data) < MIN_LENGTH:
        raise PepperError(f"{key}: {path} must hold at least {MIN_LENGTH} characters "
                          f"(e.g. `openssl rand -hex 32 > {path}`)")
    return data


def _create_dev(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode() + b"\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first: use theirs
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    log.warning("generated a development pepper for PIN hashes at %s; set security.pepper_file "
                "before production", path)


def load(settings: SecuritySettings) -> PepperSource:
    """The pepper these settings name (blocking file I/O: call at start or in a thread)."""
    if settings.pepper_file:
        path = Path(settings.pepper_file).expanduser()
        return PepperSource(Pepper(_read(path, "security.pepper_file")), "security.pepper_file", str(path), False)
    if settings.pepper:
        if len(settings.pepper) < MIN_LENGTH:
            raise PepperError(f"security.pepper: must be at least {MIN_LENGTH} characters")
        return PepperSource(Pepper(settings.pepper.strip().encode()), "security.pepper", None, False)
    path = Path(settings.dev_pepper_file).expanduser()
    if not path.exists():
        try:
            _create_dev(path)
        except OSError as exc:
            raise PepperError(f"security.dev_pepper_file: cannot create {path}: {exc.strerror}; "
                              f"set security.pepper_file or IVRSERVER_SECURITY__PEPPER") from exc
    return PepperSource(Pepper(_read(path, "security.dev_pepper_file")), "security.dev_pepper_file", str(path),
                        True)
