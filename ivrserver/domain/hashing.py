"""The one place secrets are hashed: agent passwords and customer PINs (stdlib scrypt).

Pure and stdlib only (the salt is passed in or drawn by the caller's choice of `secrets`); hashing
is CPU- and memory-heavy by design, so callers in an event loop run it in a worker thread.

Format (PHC string format, as passlib and libsodium write it)::

    $scrypt$ln=<log2 N>,r=<r>,p=<p>[,k=<pepper id>]$<salt>$<key>     (base64 without padding)

With `k=`, the key is scrypt(HMAC-SHA256(pepper, secret)): the hash is worthless without the
server-side pepper, which never leaves the server's own file or environment (PINs: 10^4-10^8
candidates fall in seconds to an offline search of an unkeyed hash, whatever the cost). The pepper
id is the first 8 hex digits of a SHA-256 of the pepper, so a hash made with another pepper is told
apart from a wrong secret (it reveals nothing usable about a 32-byte random pepper).

Two older forms still verify (and `needs_rehash` says to replace them on the next success):
`scrypt$N$r$p$<salt b64>$<key b64>` (passwords) and `scrypt$N$r$p$<salt hex>$<key hex>` (PINs).

Why scrypt, not argon2id: it is in the standard library (hashlib/OpenSSL), so this module stays
usable from `domain/` and from `scripts/hash-password` without the venv, and N=2^17, r=8, p=1 is
OWASP's recommended scrypt setting. Measured here: N=2^17 ≈ 0.45 s and 128 MiB per hash, N=2^14 ≈
0.056 s and 16 MiB (2 cores shared; `python -m ivrserver.domain.hashing` prints this host's figures).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

__all__ = ["PASSWORD_COST", "PIN_COST", "Cost", "Pepper", "hash_secret", "is_hash", "needs_rehash", "verify"]


@dataclass(frozen=True)
class Cost:
    """scrypt parameters: N = 2**ln, block size r, parallelism p."""

    ln: int
    r: int = 8
    p: int = 1

    @property
    def memory(self) -> int:
        return 128 * self.r * (2**self.ln) * self.p


# Agent passwords: OWASP's scrypt minimum (N=2^17, r=8, p=1): ~0.45 s, 128 MiB here.
PASSWORD_COST = Cost(17)
# PINs: keyed by the pepper, so the cost only slows a thief who has the pepper too; kept low
# enough for the call path (~56 ms, 16 MiB here).
PIN_COST = Cost(14)
# A stored hash asking for more than this is refused (a hostile hash must not eat memory or CPU).
MAX_MEMORY = 256 * 1024 * 1024
_MAX_LN = 18
_KEY_BYTES = 32
_SALT_MIN_BYTES = 8
_MAX_HASH_LEN = 512
_PHC_RE = re.compile(r"^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})(?:,k=([0-9a-f]{8}))?"
                     r"\$([A-Za-z0-9+/]{11,88})\$([A-Za-z0-9+/]{11,88})$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")


class Pepper:
    """A server-side secret key for PIN hashes. Its repr shows only the id, never the secret."""

    __slots__ = ("_secret", "id")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("a pepper must be at least 16 bytes")
        self._secret = secret
        self.id = hashlib.sha256(b"ivrserver pepper id\0" + secret).hexdigest()[:8]

    def mac(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"Pepper(id={self.id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pepper) and hmac.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash(self.id)


@dataclass(frozen=True)
class Parsed:
    cost: Cost
    salt: bytes
    key: bytes
    pepper_id: str | None  # None: not keyed
    legacy: bool           # one of the older `scrypt$N$r$p$...` forms


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _derive(secret: str, salt: bytes, cost: Cost, pepper: Pepper | None, dklen: int) -> bytes:
    material = secret.encode("utf-8")
    if pepper is not None:
        material = pepper.mac(material)
    return hashlib.scrypt(material, salt=salt, n=2**cost.ln, r=cost.r, p=cost.p, dklen=dklen,
                          maxmem=MAX_MEMORY + 1024 * 1024)


def hash_secret(secret: str, salt: bytes, *, cost: Cost, pepper: Pepper | None = None) -> str:
    """The stored form of `secret` (deterministic for one salt: give each a fresh random one)."""
    if not isinstance(secret, str):
        raise TypeError("secret must be text")
    if len(salt) < _SALT_MIN_BYTES:
        raise ValueError(f"salt must be at least {_SALT_MIN_BYTES} bytes")
    if not _cost_ok(cost):
        raise ValueError(f"unsupported scrypt cost {cost}")
    key = _derive(secret, salt, cost, pepper, _KEY_BYTES)
    keyed = f",k={pepper.id}" if pepper is not None else ""
    return f"$scrypt$ln={cost.ln},r={cost.r},p={cost.p}{keyed}${_b64(salt)}${_b64(key)}"


def _cost_ok(cost: Cost) -> bool:
    return 1 <= cost.ln <= _MAX_LN and 1 <= cost.r <= 32 and 1 <= cost.p <= 16 and cost.memory <= MAX_MEMORY


def parse(stored: object) -> Parsed | None:
    """The parts of a stored hash, or None when it is malformed or asks for an absurd cost."""
    if not isinstance(stored, str) or len(stored) > _MAX_HASH_LEN:
        return None
    match = _PHC_RE.match(stored)
    try:
        if match:
            cost = Cost(int(match[1]), int(match[2]), int(match[3]))
            parsed = Parsed(cost, _unb64(match[5]), _unb64(match[6]), match[4], legacy=False)
        else:
            parsed = _parse_legacy(stored)
    except (ValueError, binascii.Error):
        return None
    if parsed is None or not _cost_ok(parsed.cost) or len(parsed.salt) < _SALT_MIN_BYTES \
            or not 16 <= len(parsed.key) <= 64:
        return None
    return parsed


def _parse_legacy(stored: str) -> Parsed | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isascii() and p.isdigit() for p in parts[1:4]):
        return None
    n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    if n < 2 or n & (n - 1):
        return None
    if _HEX_RE.match(parts[4]) and _HEX_RE.match(parts[5]) and len(parts[5]) == 2 * _KEY_BYTES:
        salt, key = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])     # the old PIN form
    else:
        salt, key = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    return Parsed(Cost(n.bit_length() - 1, r, p), salt, key, None, legacy=True)


def is_hash(stored: object) -> bool:
    """True when `stored` is a well-formed hash this module can verify (any form)."""
    return parse(stored) is not None


def verify(secret: str, stored: str, *, pepper: Pepper | None = None) -> bool:
    """Constant-time check of `secret` against a stored hash; False for any malformed input and for
    a keyed hash when `pepper` is missing or is not the one it was made with."""
    parsed = parse(stored)
    if parsed is None or not isinstance(secret, str):
        return False
    if parsed.pepper_id is not None:
        if pepper is None or pepper.id != parsed.pepper_id:
            return False
        key_pepper: Pepper | None = pepper
    else:
        key_pepper = None
    try:
        candidate = _derive(secret, parsed.salt, parsed.cost, key_pepper, len(parsed.key))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(candidate, parsed.key)


def needs_rehash(stored: str, *, cost: Cost, pepper: Pepper | None = None) -> bool:
    """True when a hash that just verified should be replaced: an older form, a cost below `cost`,
    or not keyed with `pepper` (when one is given)."""
    parsed = parse(stored)
    if parsed is None:
        return True
    if parsed.legacy or parsed.cost.ln < cost.ln or parsed.cost.r < cost.r or parsed.cost.p < cost.p:
        return True
    return pepper is not None and parsed.pepper_id != pepper.id


def pepper_id_of(stored: str) -> str | None:
    """The id of the pepper a hash was keyed with (None: not keyed, or malformed)."""
    parsed = parse(stored)
    return parsed.pepper_id if parsed is not None else None


if __name__ == "__main__":  # pragma: no cover - prints this host's cost per hash
    import os
    import time

    for name, cost in (("password", PASSWORD_COST), ("pin", PIN_COST)):
        started = time.perf_counter()
        for _ in range(3):
            hash_secret("correct horse", os.urandom(16), cost=cost)
        print(f"{name}: N=2^{cost.ln} r={cost.r} p={cost.p}: {(time.perf_counter() - started) / 3 * 1000:.0f} ms, "
              f"{cost.memory // 2**20} MiB per hash")
