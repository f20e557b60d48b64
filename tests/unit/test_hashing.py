"""The one hashing module: current format, older forms, pepper, rehash decisions, hostile input."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ivrserver.domain import hashing
from ivrserver.domain.hashing import Cost, Pepper

SALT = bytes(range(16))
CHEAP = Cost(4)
PEPPER = Pepper(b"k" * 32)
OTHER = Pepper(b"o" * 32)


def legacy_password_hash(secret: str, n: int = 2**14) -> str:
    """The form web/auth.py wrote before the hashing module (base64 under `scrypt$`)."""
    key = hashlib.scrypt(secret.encode(), salt=SALT, n=n, r=8, p=1, dklen=32)
    return f"scrypt${n}$8$1${base64.b64encode(SALT).decode()}${base64.b64encode(key).decode()}"


def legacy_pin_hash(pin: str, n: int = 2**12) -> str:
    """The form domain/identification.py wrote before (hex under the same `scrypt$` prefix)."""
    key = hashlib.scrypt(pin.encode(), salt=SALT, n=n, r=8, p=1, dklen=32)
    return f"scrypt${n}$8$1${SALT.hex()}${key.hex()}"


def test_current_format_is_phc_and_verifies() -> None:
    stored = hashing.hash_secret("correct horse", SALT, cost=CHEAP)
    assert stored.startswith("$scrypt$ln=4,r=8,p=1$")
    assert hashing.verify("correct horse", stored)
    assert not hashing.verify("correct horsE", stored)
    assert stored == hashing.hash_secret("correct horse", SALT, cost=CHEAP)  # deterministic per salt
    assert stored != hashing.hash_secret("correct horse", bytes(16), cost=CHEAP)


def test_current_costs() -> None:
    assert Cost(17, 8, 1) == hashing.PASSWORD_COST  # OWASP's scrypt minimum
    assert hashing.PASSWORD_COST.memory == 128 * 2**20
    assert hashing.PIN_COST.ln >= 14


@pytest.mark.parametrize(("stored", "secret"), [
    (legacy_password_hash("agent1001"), "agent1001"),
    (legacy_pin_hash("1357"), "1357"),
])
def test_older_forms_verify_and_need_rehash(stored: str, secret: str) -> None:
    assert hashing.verify(secret, stored)
    assert not hashing.verify(secret + "0", stored)
    assert hashing.needs_rehash(stored, cost=CHEAP)


@pytest.mark.parametrize(("stored", "cost", "pepper", "rehash"), [
    (hashing.hash_secret("x", SALT, cost=Cost(4)), Cost(4), None, False),
    (hashing.hash_secret("x", SALT, cost=Cost(4)), Cost(5), None, True),        # cost raised
    (hashing.hash_secret("x", SALT, cost=Cost(5)), Cost(4), None, False),       # above is fine
    (hashing.hash_secret("x", SALT, cost=Cost(4)), Cost(4), PEPPER, True),      # not keyed yet
    (hashing.hash_secret("x", SALT, cost=Cost(4), pepper=PEPPER), Cost(4), PEPPER, False),
    (hashing.hash_secret("x", SALT, cost=Cost(4), pepper=OTHER), Cost(4), PEPPER, True),
])
def test_needs_rehash(stored: str, cost: Cost, pepper: Pepper | None, rehash: bool) -> None:
    assert hashing.needs_rehash(stored, cost=cost, pepper=pepper) is rehash


def test_pepper_keys_the_hash() -> None:
    stored = hashing.hash_secret("1234", SALT, cost=CHEAP, pepper=PEPPER)
    assert f",k={PEPPER.id}$" in stored and hashing.pepper_id_of(stored) == PEPPER.id
    assert hashing.verify("1234", stored, pepper=PEPPER)
    assert not hashing.verify("1234", stored)                 # without the pepper: worthless
    assert not hashing.verify("1234", stored, pepper=OTHER)   # another pepper: worthless
    # an offline search over all 4-digit PINs without the pepper finds nothing
    parsed = hashing.parse(stored)
    assert parsed is not None
    assert not any(hashlib.scrypt(f"{n:04d}".encode(), salt=parsed.salt, n=16, r=8, p=1, dklen=32) == parsed.key
                   for n in range(10000))


def test_pepper_never_shows_its_secret() -> None:
    secret = b"super-secret-pepper-0123456789abcdef"
    text = repr(Pepper(secret)) + str(Pepper(secret))
    assert "super-secret" not in text and Pepper(secret).id in text
    with pytest.raises(ValueError):
        Pepper(b"short")


@pytest.mark.parametrize("stored", [
    "", "plain", "scrypt$1$8$1$AAAA$AAAA", "scrypt$16384$8$1$!!!$AAAA", "md5$x$y$z$a$b",
    "scrypt$16385$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==",       # N not a power of two
    "scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==",  # absurd cost
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",                            # key too short
    "$scrypt$ln=30,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # 128 GiB
    "$scrypt$ln=17,r=32,p=16$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "$scrypt$ln=4,r=8,p=1,k=zzzzzzzz$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "$scrypt$ln=4,r=8,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",    # salt too short
    "$scrypt$ln=4,r=8,p=1$" + "A" * 600,
    None, 42,
])
def test_malformed_hash_never_verifies(stored: object) -> None:
    assert not hashing.is_hash(stored)
    assert not hashing.verify("anything", stored)  # type: ignore[arg-type]
    assert hashing.needs_rehash(stored, cost=CHEAP)  # type: ignore[arg-type]


def test_hash_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        hashing.hash_secret("x", b"short", cost=CHEAP)
    with pytest.raises(ValueError):
        hashing.hash_secret("x", SALT, cost=Cost(30))


def test_hash_password_script_prints_a_current_hash(tmp_path: object) -> None:
    """scripts/hash-password needs only the standard library (run isolated from the venv's packages)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "hash-password"
    out = subprocess.run([sys.executable, "-S", str(script), "--stdin"], input="correct horse\n",
                         capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert out.startswith("$scrypt$ln=17,r=8,p=1$") and hashing.verify("correct horse", out)
    assert not hashing.needs_rehash(out, cost=hashing.PASSWORD_COST)


def test_session_tokens_never_start_with_a_dash() -> None:
    from ivrserver.services.sessions import new_token

    tokens = [new_token() for _ in range(2000)]  # 1 in 64 urlsafe tokens starts with '-'
    assert not [t for t in tokens if t.startswith("-")]
    assert len(set(tokens)) == 2000 and all(len(t) >= 43 for t in tokens)
