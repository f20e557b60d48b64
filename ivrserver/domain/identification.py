"""Account number + PIN identification: PIN hashing and the attempt-limit / lockout policy.

Pure: the salt and the current time are passed in. A PIN is never part of any return value,
exception message or repr produced here.

Hash format (self-describing so parameters can change later)::

    scrypt$<n>$<r>$<p>$<salt hex>$<derived key hex>

Lockout: `max_failures` wrong PINs for one account within `window_seconds` lock the account for
`lock_seconds`. While locked, even the right PIN is refused (so guessing cannot continue). A right
PIN outside a lock clears the failures.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass

PIN_MIN_DIGITS = 4
PIN_MAX_DIGITS = 8
ACCOUNT_MIN_DIGITS = 4
ACCOUNT_MAX_DIGITS = 20

# scrypt cost: ~20 ms per hash here (callers in an event loop run it in a worker thread).
# A 4-8 digit PIN cannot resist an offline attack on a stolen hash whatever the cost;
# the hash keeps PINs out of plain sight and the lockout stops online guessing.
SCRYPT_N = 2**12
SCRYPT_R = 8
SCRYPT_P = 1
_DKLEN = 32
_SALT_MIN_BYTES = 8
_DIGITS = frozenset("0123456789")


def is_valid_pin(pin: object) -> bool:
    return isinstance(pin, str) and PIN_MIN_DIGITS <= len(pin) <= PIN_MAX_DIGITS and set(pin) <= _DIGITS


def is_valid_account_number(account: object) -> bool:
    return (isinstance(account, str) and ACCOUNT_MIN_DIGITS <= len(account) <= ACCOUNT_MAX_DIGITS
            and set(account) <= _DIGITS)


def hash_pin(pin: str, salt: bytes) -> str:
    """The stored form of `pin` with this `salt` (deterministic; give each customer a fresh salt)."""
    if not is_valid_pin(pin):
        raise ValueError(f"a PIN must be {PIN_MIN_DIGITS}-{PIN_MAX_DIGITS} digits")
    if len(salt) < _SALT_MIN_BYTES:
        raise ValueError(f"salt must be at least {_SALT_MIN_BYTES} bytes")
    key = hashlib.scrypt(pin.encode("ascii"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=_DKLEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def is_pin_hash(text: object) -> bool:
    """True when `text` is a well-formed hash this module can verify."""
    return _parse(text) is not None


def _parse(text: object) -> tuple[int, int, int, bytes, bytes] | None:
    if not isinstance(text, str) or len(text) > 512:
        return None
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return None
    # Bounds keep a hostile stored hash from making verification eat all memory or CPU.
    if not (2 <= n <= 2**16 and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4):
        return None
    if len(salt) < _SALT_MIN_BYTES or len(key) != _DKLEN:
        return None
    return n, r, p, salt, key


def verify_pin(pin: str, stored: str) -> bool:
    """Constant-time check of `pin` against a stored hash; False for any malformed input."""
    parsed = _parse(stored)
    if parsed is None or not is_valid_pin(pin):
        return False
    n, r, p, salt, key = parsed
    candidate = hashlib.scrypt(pin.encode("ascii"), salt=salt, n=n, r=r, p=p, dklen=len(key),
                               maxmem=256 * 1024 * 1024)
    return hmac.compare_digest(candidate, key)


@functools.cache
def dummy_hash() -> str:
    """A hash to verify for unknown accounts, so that they take as long as known ones."""
    return hash_pin("0000", b"ivrserver-dummy-salt")


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
