"""Account number + PIN identification: PIN hashing and the attempt-limit / lockout policy.

Pure: the salt, the pepper and the current time are passed in. A PIN is never part of any return
value, exception message or repr produced here.

PIN hashes are made by `ivrserver.domain.hashing` (the one module for passwords and PINs), keyed
with the server-side pepper: `$scrypt$ln=14,r=8,p=1,k=<pepper id>$<salt>$<key>`. Older unkeyed
hashes (`scrypt$<n>$<r>$<p>$<salt hex>$<key hex>`) still verify and are replaced on the next
successful identification (`pin_needs_rehash`).

Lockout: `max_failures` wrong PINs for one account within `window_seconds` lock the account for
`lock_seconds`. While locked, even the right PIN is refused (so guessing cannot continue). A right
PIN outside a lock clears the failures.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ivrserver.domain import hashing
from ivrserver.domain.hashing import Pepper

PIN_MIN_DIGITS = 4
PIN_MAX_DIGITS = 8
ACCOUNT_MIN_DIGITS = 4
ACCOUNT_MAX_DIGITS = 20

_DIGITS = frozenset("0123456789")


def is_valid_pin(pin: object) -> bool:
    return isinstance(pin, str) and PIN_MIN_DIGITS <= len(pin) <= PIN_MAX_DIGITS and set(pin) <= _DIGITS


def is_valid_account_number(account: object) -> bool:
    return (isinstance(account, str) and ACCOUNT_MIN_DIGITS <= len(account) <= ACCOUNT_MAX_DIGITS
            and set(account) <= _DIGITS)


def hash_pin(pin: str, salt: bytes, pepper: Pepper) -> str:
    """The stored form of `pin`, keyed with the server's `pepper` (deterministic for one salt;
    give each customer a fresh salt). See `ivrserver.domain.hashing`."""
    if not is_valid_pin(pin):
        raise ValueError(f"a PIN must be {PIN_MIN_DIGITS}-{PIN_MAX_DIGITS} digits")
    return hashing.hash_secret(pin, salt, cost=hashing.PIN_COST, pepper=pepper)


def is_pin_hash(text: object) -> bool:
    """True when `text` is a well-formed hash this module can verify (keyed, or an older unkeyed one)."""
    return hashing.is_hash(text)


def verify_pin(pin: str, stored: str, pepper: Pepper) -> bool:
    """Constant-time check of `pin` against a stored hash; False for any malformed input.
    Older unkeyed hashes (hex `scrypt$N$r$p$salt$key`) still verify: see `pin_needs_rehash`."""
    if not is_valid_pin(pin):
        return False
    return hashing.verify(pin, stored, pepper=pepper)


def pin_needs_rehash(stored: str, pepper: Pepper) -> bool:
    """True when a hash that just verified is not keyed with `pepper` at the current PIN cost."""
    return hashing.needs_rehash(stored, cost=hashing.PIN_COST, pepper=pepper)


def dummy_hash(pepper: Pepper) -> str:
    """A hash to verify for unknown accounts, so that they take as long as known ones."""
    return _dummy_hash(pepper)


@functools.lru_cache(maxsize=4)
def _dummy_hash(pepper: Pepper) -> str:
    return hash_pin("0000", b"ivrserver-dummy-salt", pepper)


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int = 3
    window_seconds: float = 15 * 60
    lock_seconds: float = 30 * 60

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window_seconds <= 0 or self.lock_seconds <= 0:
            raise ValueError("max_failures >= 1, window_seconds > 0 and lock_seconds > 0 are required")


@dataclass(frozen=True)
class Attempts:
    """Recent wrong-PIN times for one account and the end of its lock (0 = not locked)."""

    failures: tuple[float, ...] = ()
    locked_until: float = 0.0


@dataclass(frozen=True)
class Locked:
    """Identification refused: the account is locked until `until` (epoch seconds)."""

    until: float


def locked_until(attempts: Attempts, now: float) -> float | None:
    """When the current lock ends, or None if the account is not locked at `now`."""
    return attempts.locked_until if attempts.locked_until > now else None


def after_failure(attempts: Attempts, now: float, policy: LockoutPolicy) -> Attempts:
    """The state after one more wrong PIN at `now` (locks when the limit is reached)."""
    recent = (*(t for t in attempts.failures if now - policy.window_seconds < t <= now), now)
    if len(recent) >= policy.max_failures:
        return Attempts(failures=(), locked_until=now + policy.lock_seconds)
    still_locked = attempts.locked_until if attempts.locked_until > now else 0.0
    return Attempts(failures=recent, locked_until=still_locked)


def expiry_seconds(attempts: Attempts, now: float, policy: LockoutPolicy) -> int:
    """How long the stored state must live: until the lock ends or the last failure leaves the window."""
    ends = [attempts.locked_until] if attempts.locked_until > now else []
    ends += [t + policy.window_seconds for t in attempts.failures]
    return max(1, int(max(ends, default=now) - now) + 1)


def encode_attempts(attempts: Attempts) -> dict[str, str]:
    return {"failures": ",".join(repr(t) for t in attempts.failures),
            "locked_until": repr(attempts.locked_until)}


def decode_attempts(fields: dict[str, str]) -> Attempts:
    """Parse the stored form; unreadable parts count as absent (never crash identification)."""
    failures: list[float] = []
    for part in (fields.get("failures") or "").split(",")[:100]:
        try:
            failures.append(float(part))
        except ValueError:
            continue
    try:
        until = float(fields.get("locked_until") or 0.0)
    except ValueError:
        until = 0.0
    return Attempts(failures=tuple(failures), locked_until=until)
