"""Every `ivrserver` subcommand run as a user runs it: the console script in a child process, against
the private test Redis (tests/conftest.py), asserting on exit codes and the lines a user reads.

`run` and `menus reload` need a running server: tests/test_cli_run.py. The last test here fails
when a subcommand registered in `cli.build_parser()` has no test.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import yaml

from ivrserver import cli
from ivrserver.domain.menu_engine import PathEvent, PathKind
from ivrserver.domain.menu_stats import CallPath
from ivrserver.store.callpath import RedisPathRecorder
from ivrserver.store.keys import Keys
from tests.cli_harness import (
    COVERED,
    IVRSERVER,
    REPO,
    assert_clean_failure,
    covers,
    free_port,
    ivrserver,
    leaf_commands,
    user_env,
)


@pytest.fixture
def env(redis_url: str) -> Iterator[dict[str, str]]:
    """A user's environment on a flushed test Redis."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    yield user_env(redis_url)


# ---------------------------------------------------------------------------------------------
# config


@covers("config")
def test_config_prints_the_effective_settings_without_the_secret(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "ivrserver.yaml"
    path.write_text("web: {port: 9001}\n")
    # IVRSERVER_TOKEN (menus reload) and IVRSERVER_KEEP_ASTERISK (tests) are not settings: they must
    # not abort the command (they did: "token: unknown section").
    result = ivrserver("-c", str(path), "config", env={
        **env, "IVRSERVER_AMI__PORT": "5039", "IVRSERVER_AMI__SECRET": "s3cret-value",
        "IVRSERVER_TOKEN": "x", "IVRSERVER_KEEP_ASTERISK": "1"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "web.port = 9001" in lines           # from the file
    assert "ami.port = 5039" in lines           # from the environment
    assert "ami.secret = ***" in lines
    assert "s3cret-value" not in result.stdout + result.stderr


@covers("config")
def test_config_errors_are_listed_with_did_you_mean(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "ivrserver.yaml"
    path.write_text("ami: {prot: 5039}\n")
    result = ivrserver("-c", str(path), "config", env={**env, "IVRSERVER_AIM__PORT": "1"})
    assert result.returncode == 2
    assert_clean_failure(result)
    assert "invalid configuration:" in result.stderr
    assert "ami.prot: unknown key; did you mean 'port'?" in result.stderr
    assert "IVRSERVER_AIM__PORT: unknown section 'aim'; did you mean 'ami'?" in result.stderr


def test_a_reader_that_leaves_early_gets_no_traceback(env: dict[str, str], tmp_path: Path) -> None:
    # `ivrserver config | head -1`: the reader closes the pipe before the command writes.
    errors = tmp_path / "stderr"
    with errors.open("wb") as err:
        proc = subprocess.Popen([str(IVRSERVER), "config"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        proc.stdout.close()
        assert proc.wait(timeout=60) in (1, -signal.SIGPIPE)
    assert "Traceback" not in errors.read_text(), errors.read_text()


# ---------------------------------------------------------------------------------------------
# doctor


@covers("doctor")
def test_doctor_against_a_dead_ami_fails_readably(env: dict[str, str], tmp_path: Path) -> None:
    dead_ami = free_port()
    settings = {**env, "IVRSERVER_AMI__PORT": str(dead_ami), "IVRSERVER_AGI__PORT": str(free_port()),
                "IVRSERVER_ASTERISK__CONFIG_DIR": str(tmp_path)}
    result = ivrserver("doctor", env=settings)
    assert_clean_failure(result)
    assert result.returncode == 1
    ami = [line for line in result.stdout.splitlines() if "ami" in line.lower() and str(dead_ami) in line]
    assert ami and re.search(r"fail", ami[0], re.I), result.stdout
    assert any(re.match(r"\[ok\]\s+redis", line) for line in result.stdout.splitlines()), result.stdout

    result = ivrserver("doctor", "--format", "json", env=settings)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["redis"]["ok"] is True
    failed = [c for name, c in checks.items() if name.startswith("ami") and not c["ok"]]
    assert failed and all(c["fix"] for c in failed)


# ---------------------------------------------------------------------------------------------
# menus check | simulate | stats


@covers("menus check")
def test_menus_check_passes_the_shipped_menus_and_points_at_a_mistake(env: dict[str, str], tmp_path: Path) -> None:
    result = ivrserver("menus", "check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s)" in result.stdout

    broken = tmp_path / "hotline.yaml"
    text = (REPO / "menus" / "hotline.yaml").read_text()
    target = re.search(r"goto: (\w+)", text)
    assert target is not None
    broken.write_text(text.replace(target.group(0), target.group(0) + "x", 1))
    result = ivrserver("menus", "check", str(broken), env=env)
    assert result.returncode == 1
    assert_clean_failure(result)
    assert re.search(rf"hotline\.yaml:\d+:\d+: error: .*'{target.group(1)}x'.*did you mean '{target.group(1)}'\?",
                     result.stdout), result.stdout

    result = ivrserver("menus", "check", str(broken), "--format", "json", env=env)
    assert result.returncode == 1 and json.loads(result.stdout)["errors"] >= 1


@covers("menus simulate")
def test_menus_simulate_walks_the_hotline(env: dict[str, str]) -> None:
    result = ivrserver("menus", "simulate", "hotline", "--keys", "1", "--data", "balance=42",
                       "--at", "2025-06-02T10:00", env=env)     # a Monday morning: open
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("menu hotline")
    assert "caller presses 1" in result.stdout
    assert "<say number 42>" in result.stdout

    result = ivrserver("menus", "simulate", "hotline", "--keys", "1,x", env=env)
    assert result.returncode == 2
    assert_clean_failure(result)
    assert "--keys" in result.stderr

    result = ivrserver("menus", "simulate", "no-such-menu", env=env)
    assert_clean_failure(result)


@covers("menus stats")
def test_menus_stats_reports_recorded_calls(env: dict[str, str], redis_url: str) -> None:
    now = time.time()

    def path(call_id: str, key: str, exit_reason: str) -> CallPath:
        t = now - 600
        return CallPath(call_id, "hotline", "v1", t, (
            PathEvent(PathKind.START, "main", t, detail="open"),
            PathEvent(PathKind.ENTER, "main", t),
            PathEvent(PathKind.KEY, "main", t + 3, key=key, target="goto:balance"),
            PathEvent(PathKind.EXIT, "balance", t + 9, detail=exit_reason)))

    async def seed() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            recorder = RedisPathRecorder(client, Keys("ivr"), 86400)   # the CLI's default prefix
            for i in range(3):
                await recorder.record(path(f"call-{i}", "1", "self_served"))
        finally:
            await client.aclose()

    asyncio.run(seed())
    result = ivrserver("menus", "stats", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["calls"] == 3

    result = ivrserver("menus", "stats", "--days", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("menu hotline: 3 call(s)")

    result = ivrserver("menus", "stats", "--redis-url", f"redis://127.0.0.1:{free_port()}/0", env=env)
    assert result.returncode == 2
    assert_clean_failure(result)


# ---------------------------------------------------------------------------------------------
# customers import | export | show

CUSTOMERS = """\
customers:
  - id: c-cli-1
    name: Wang Lei
    phones: ["+8613800000001"]
    tier: vip
    segment: enterprise
    language: en
    account_number: "80010001"
    pin: "4321"
  - id: c-cli-2
    name: Li Na
    phones: ["+8613800000002"]
    tier: gold
    segment: family
    language: en
"""


@pytest.fixture
def customers_file(tmp_path: Path) -> Path:
    path = tmp_path / "customers.yaml"
    path.write_text(CUSTOMERS)
    return path


@covers("customers import")
def test_customers_import_all_or_nothing(env: dict[str, str], customers_file: Path, tmp_path: Path) -> None:
    result = ivrserver("customers", "import", str(customers_file), env=env)
    assert result.returncode == 0, result.stderr
    assert "imported 2 customer(s)" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(CUSTOMERS.replace("c-cli-2", "c-cli-3").replace("tier: gold", "tier: platinum"))
    result = ivrserver("customers", "import", str(bad), env=env)
    assert_clean_failure(result)
    assert re.search(r"bad\.yaml:\d+: tier: ", result.stderr), result.stderr       # file:line: field: what is wrong
    assert "nothing imported" in result.stderr
    assert ivrserver("customers", "show", "c-cli-3", env=env).returncode != 0   # nothing imported


@covers("customers export")
def test_customers_export_writes_every_customer_without_pins(env: dict[str, str], customers_file: Path,
                                                            tmp_path: Path) -> None:
    assert ivrserver("customers", "import", str(customers_file), env=env).returncode == 0
    result = ivrserver("customers", "export", "--format", "yaml", env=env)
    assert result.returncode == 0, result.stderr
    exported = yaml.safe_load(result.stdout)
    rows = exported["customers"] if isinstance(exported, dict) else exported
    assert sorted(row["id"] for row in rows) == ["c-cli-1", "c-cli-2"]
    assert "4321" not in result.stdout

    out = tmp_path / "customers.csv"
    result = ivrserver("customers", "export", "--format", "csv", "--output", str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert "c-cli-1" in out.read_text() and "Li Na" in out.read_text()


@covers("customers show")
def test_customers_show_one_customer(env: dict[str, str], customers_file: Path) -> None:
    assert ivrserver("customers", "import", str(customers_file), env=env).returncode == 0
    result = ivrserver("customers", "show", "c-cli-1", env=env)
    assert result.returncode == 0, result.stderr
    assert "Wang Lei" in result.stdout and "vip" in result.stdout
    assert "4321" not in result.stdout

    result = ivrserver("customers", "show", "nobody", env=env)
    assert result.returncode == 1
    assert_clean_failure(result)
    assert "nobody" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# callbacks list | add | reschedule | cancel (all four crashed: `handler=` where cli expects `func`)

CALLBACK_LINE = re.compile(r"^(?P<id>[0-9a-f]{8,})\s+(?P<state>\w+)\s+(?P<customer>\S+)\s+(?P<number>\S+)\s+"
                           r"due (?P<due>-|\S+ \S+)")


def tomorrow_at(hour: int) -> str:
    """A time inside every calling window (company 08-21, the customer's default 09-20, UTC) whatever
    the hour the tests run: '+1h' at 19:30 UTC is outside, and the test failed every evening."""
    day = datetime.now(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC).isoformat()


def added(env: dict[str, str], *extra: str) -> re.Match[str]:
    result = ivrserver("callbacks", "add", "--customer", "c-cli-1", "--number", "+8613800000001",
                       "--at", tomorrow_at(10), "--reason", "billing question", *extra, env=env)
    assert result.returncode == 0, result.stderr
    match = CALLBACK_LINE.match(result.stdout)
    assert match is not None, result.stdout
    return match


@covers("callbacks add")
def test_callbacks_add(env: dict[str, str]) -> None:
    line = added(env, "--agent", "agent1003")
    assert line["state"] == "scheduled" and line["customer"] == "c-cli-1"
    assert "agent agent1003" in line.string

    result = ivrserver("callbacks", "add", "--customer", "c-cli-1", "--number", "not a number", "--at", "+1h",
                       env=env)
    assert result.returncode == 2
    assert_clean_failure(result)
    assert result.stderr.startswith("error: number")

    result = ivrserver("callbacks", "add", "--customer", "c-cli-1", "--number", "+8613800000001",
                       "--at", "yesterday", env=env)
    assert result.returncode == 2
    assert_clean_failure(result)


@covers("callbacks list")
def test_callbacks_list(env: dict[str, str], redis_url: str, tmp_path: Path) -> None:
    first = added(env)
    second = added(env, "--agent", "agent1003")
    result = ivrserver("callbacks", "list", env=env)
    assert result.returncode == 0, result.stderr
    assert {m["id"] for m in map(CALLBACK_LINE.match, result.stdout.splitlines()) if m} == {first["id"], second["id"]}

    result = ivrserver("callbacks", "list", "--agent", "agent1003", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [second["id"]]

    # The main parser's -c FILE reaches the subcommand (the sub-parser's own --config used to
    # overwrite it with None): here the file alone names the test Redis.
    path = tmp_path / "ivrserver.yaml"
    path.write_text(yaml.safe_dump({"redis": {"url": redis_url}}))
    for argv in (("-c", str(path), "callbacks", "list"), ("callbacks", "-c", str(path), "list")):
        result = ivrserver(*argv, env=user_env(None))
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == 2

    result = ivrserver("callbacks", "list", "--state", "dialling", env=env)     # argparse's own message
    assert result.returncode == 2
    assert_clean_failure(result)

    result = ivrserver("callbacks", "list", "--redis-url", f"redis://127.0.0.1:{free_port()}/0", env=env)
    assert result.returncode == 1
    assert_clean_failure(result)
    assert "cannot reach Redis" in result.stderr


@covers("callbacks reschedule")
def test_callbacks_reschedule(env: dict[str, str]) -> None:
    before = added(env)
    result = ivrserver("callbacks", "reschedule", before["id"], "--at", tomorrow_at(13), env=env)
    assert result.returncode == 0, result.stderr
    after = CALLBACK_LINE.match(result.stdout)
    assert after is not None and after["id"] == before["id"] and after["due"] > before["due"]

    result = ivrserver("callbacks", "reschedule", "0123456789abcdef", "--at", "+3h", env=env)
    assert result.returncode == 1
    assert_clean_failure(result)
    assert "no callback" in result.stderr


@covers("callbacks cancel")
def test_callbacks_cancel(env: dict[str, str]) -> None:
    line = added(env)
    result = ivrserver("callbacks", "cancel", line["id"], "--reason", "customer called in", env=env)
    assert result.returncode == 0, result.stderr
    cancelled = CALLBACK_LINE.match(result.stdout)
    assert cancelled is not None and cancelled["state"] == "cancelled"

    listed = ivrserver("callbacks", "list", "--state", "cancelled", "--json", env=env)
    assert [json.loads(x)["id"] for x in listed.stdout.splitlines()] == [line["id"]]

    result = ivrserver("callbacks", "cancel", "0123456789abcdef", env=env)
    assert result.returncode == 1
    assert_clean_failure(result)


# ---------------------------------------------------------------------------------------------
# The guard: every registered subcommand has a test above or in another tests/test_cli_*.py.


def test_every_subcommand_is_tested_and_has_a_handler() -> None:
    for module in sorted(Path(__file__).parent.glob("test_cli_*.py")):
        importlib.import_module(f"tests.{module.stem}")
    registered = dict(leaf_commands(cli.build_parser()))
    untested = sorted(" ".join(path) for path in registered.keys() - COVERED.keys())
    assert not untested, f"subcommands without a test (mark it @covers(...)): {untested}"
    stale = sorted(" ".join(path) for path in COVERED.keys() - registered.keys())
    assert not stale, f"@covers names commands that do not exist: {stale}"
    # cli.main calls args.func: a subcommand that sets another default name crashes on every run.
    assert not [path for path, parser in registered.items() if not callable(parser.get_default("func"))]


@covers("config", "menus check", "doctor")
@pytest.mark.parametrize("command", [["config"], ["menus", "check"], ["doctor"]])
def test_the_settings_file_may_follow_the_command(command: list[str], env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ami: {prot: 1}\n")
    for argv in (["-c", str(bad), *command], [*command, "-c", str(bad)]):
        result = ivrserver(*argv, env=env)
        assert result.returncode == 2, argv
        assert "ami.prot: unknown key" in result.stderr and "did you mean 'port'" in result.stderr, argv


@covers("config")
def test_config_hides_passwords_in_connection_urls(env: dict[str, str]) -> None:
    env = {**env, "IVRSERVER_POSTGRES__DSN": "postgresql://ivr:pg-s3cret@db.example:5432/ivr",
           "IVRSERVER_REDIS__URL": "redis://:r3d1s-s3cret@cache.example:6379/0"}
    out = ivrserver("config", env=env)
    assert out.returncode == 0, out.stderr
    assert "pg-s3cret" not in out.stdout and "r3d1s-s3cret" not in out.stdout
    assert "postgres.dsn = postgresql://ivr:***@db.example:5432/ivr" in out.stdout
    assert "redis.url = redis://:***@cache.example:6379/0" in out.stdout


@covers("callbacks list")
def test_a_reader_leaving_a_callbacks_listing_is_not_a_redis_failure(env: dict[str, str], tmp_path: Path) -> None:
    added(env)
    errors = tmp_path / "stderr"
    with errors.open("wb") as err:
        proc = subprocess.Popen([str(IVRSERVER), "callbacks", "list"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=err)
        assert proc.stdout is not None
        proc.stdout.close()  # `ivrserver callbacks list | head -0`
        assert proc.wait(timeout=60) in (1, -signal.SIGPIPE)
    text = errors.read_text()
    assert "Traceback" not in text and "cannot reach Redis" not in text, text
