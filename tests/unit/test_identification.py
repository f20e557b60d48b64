from __future__ import annotations

import hashlib

import pytest

from ivrserver.domain import hashing
from ivrserver.domain import identification as ident
from ivrserver.domain.hashing import Pepper
from ivrserver.domain.identification import Attempts, LockoutPolicy

SALT = bytes(range(16))
POLICY = LockoutPolicy(max_failures=3, window_seconds=900, lock_seconds=1800)
PEPPER = Pepper(b"p" * 32)


def test_hash_is_deterministic_given_salt_and_salted_and_keyed() -> None:
    first = ident.hash_pin("1234", SALT, PEPPER)
    assert first == ident.hash_pin("1234", SALT, PEPPER)
    assert first != ident.hash_pin("1234", bytes(16 - i for i in range(16)), PEPPER)
    assert first != ident.hash_pin("1234", SALT, Pepper(b"q" * 32))
    assert first.startswith(f"$scrypt$ln={hashing.PIN_COST.ln},r=8,p=1,k={PEPPER.id}$")
    assert ident.is_pin_hash(first)
    assert not ident.pin_needs_rehash(first, PEPPER)


def test_hash_does_not_contain_the_pin_in_clear() -> None:
    stored = ident.hash_pin("98765432", SALT, PEPPER)
    assert "98765432" not in stored


@pytest.mark.parametrize(("pin", "ok"), [
    ("1234", True), ("1235", False), ("01234", False), ("123", False), ("", False), ("12a4", False),
    ("1234\n", False),
])
def test_verify(pin: str, ok: bool) -> None:
    assert ident.verify_pin(pin, ident.hash_pin("1234", SALT, PEPPER), PEPPER) is ok


def test_unkeyed_hash_of_before_still_verifies_and_needs_rehash() -> None:
    key = hashlib.scrypt(b"1357", salt=SALT, n=2**12, r=8, p=1, dklen=32)
    old = f"scrypt$4096$8$1${SALT.hex()}${key.hex()}"
    assert ident.is_pin_hash(old)
    assert ident.verify_pin("1357", old, PEPPER) and not ident.verify_pin("1358", old, PEPPER)
    assert ident.pin_needs_rehash(old, PEPPER)


@pytest.mark.parametrize("stored", [
    "", "plain1234", "scrypt$1$2$3", "bcrypt$4096$8$1$00$00", "scrypt$4096$8$1$zz$00",
    "scrypt$4095$8$1$" + SALT.hex() + "$" + "00" * 32,           # n not a power of two
    "scrypt$1048576$8$1$" + SALT.hex() + "$" + "00" * 32,        # n too large: would eat memory
    "scrypt$4096$8$1$" + "00" * 4 + "$" + "00" * 32,             # salt too short
    "scrypt$4096$8$1$" + SALT.hex() + "$" + "00" * 8,            # key of the wrong length
])
def test_verify_rejects_malformed_hashes(stored: str) -> None:
    assert ident.verify_pin("1234", stored, PEPPER) is False
    assert ident.is_pin_hash(stored) is False


@pytest.mark.parametrize(("pin", "salt"), [("123", SALT), ("123456789", SALT), ("abcd", SALT), ("1234", b"x")])
def test_hash_pin_refuses_bad_input(pin: str, salt: bytes) -> None:
    with pytest.raises(ValueError) as info:
        ident.hash_pin(pin, salt, PEPPER)
    assert pin not in str(info.value)


def test_dummy_hash_never_matches_a_short_guess_and_is_cached() -> None:
    assert ident.is_pin_hash(ident.dummy_hash(PEPPER))
    assert ident.dummy_hash(PEPPER) is ident.dummy_hash(PEPPER)


# (failures before, locked_until before, now) → (locked?, failures kept)
@pytest.mark.parametrize(("failures", "locked_until", "now", "locks", "kept"), [
    ((), 0.0, 1000.0, False, 1),                       # first failure
    ((900.0,), 0.0, 1000.0, False, 2),                 # second within the window
    ((500.0, 900.0), 0.0, 1000.0, True, 0),            # third within 15 minutes → lock
    ((50.0, 900.0), 0.0, 1000.0, False, 2),            # oldest left the window (1000-900=100 > 50)
    ((100.0, 900.0), 0.0, 1000.0, False, 2),           # exactly window_seconds old: outside
    ((101.0, 900.0), 0.0, 1000.0, True, 0),            # just inside
    ((900.0, 5000.0), 0.0, 1000.0, False, 2),          # a future time (clock skew) is ignored
])
def test_after_failure(failures: tuple[float, ...], locked_until: float, now: float, locks: bool,
                       kept: int) -> None:
    after = ident.after_failure(Attempts(failures, locked_until), now, POLICY)
    assert (ident.locked_until(after, now) is not None) is locks
    assert len(after.failures) == kept
    if locks:
        assert after.locked_until == now + POLICY.lock_seconds


@pytest.mark.parametrize(("locked_until", "now", "expected"), [
    (0.0, 10.0, None), (100.0, 99.9, 100.0), (100.0, 100.0, None), (100.0, 150.0, None),
])
def test_locked_until(locked_until: float, now: float, expected: float | None) -> None:
    assert ident.locked_until(Attempts((), locked_until), now) == expected


@pytest.mark.parametrize(("attempts", "now", "expected"), [
    (Attempts((), 2800.0), 1000.0, 1801),                # lock end
    (Attempts((900.0,), 0.0), 1000.0, 801),              # last failure leaves the window
    (Attempts(), 1000.0, 1),
])
def test_expiry_seconds(attempts: Attempts, now: float, expected: int) -> None:
    assert ident.expiry_seconds(attempts, now, POLICY) == expected


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, Attempts()),
    ({"failures": "1.5,2.0", "locked_until": "0.0"}, Attempts((1.5, 2.0), 0.0)),
    ({"failures": "x,3", "locked_until": "junk"}, Attempts((3.0,), 0.0)),
])
def test_decode_attempts_is_forgiving(fields: dict[str, str], expected: Attempts) -> None:
    assert ident.decode_attempts(fields) == expected


def test_encode_decode_round_trip() -> None:
    state = Attempts((1700000000.25, 1700000100.5), 1700001900.0)
    assert ident.decode_attempts(ident.encode_attempts(state)) == state


@pytest.mark.parametrize("kwargs", [{"max_failures": 0}, {"window_seconds": 0}, {"lock_seconds": -1}])
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LockoutPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "pin_ok", "account_ok"), [
    ("1234", True, True), ("12345678", True, True), ("123456789", False, True), ("123", False, False),
    ("12 4", False, False), ("١٢٣٤", False, False), (1234, False, False), ("1" * 21, False, False),
])
def test_digit_rules(value: object, pin_ok: bool, account_ok: bool) -> None:
    assert ident.is_valid_pin(value) is pin_ok
    assert ident.is_valid_account_number(value) is account_ok
