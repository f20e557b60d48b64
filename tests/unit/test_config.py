import dataclasses

import pytest

from ivrserver import config
from ivrserver.config import ConfigError

# The allowed names as errors list them (computed: other sections and keys get added over time).
SECTIONS = ", ".join(sorted(f.name for f in dataclasses.fields(config.Settings)))
AMI_KEYS = ", ".join(sorted(f.name for f in dataclasses.fields(config.AmiSettings)))


def test_defaults_match_the_documented_local_stack() -> None:
    s = config.load(environ={})
    assert (s.ami.host, s.ami.port) == ("127.0.0.1", 5038)
    assert (s.agi.host, s.agi.port) == ("127.0.0.1", 4573)
    assert (s.web.host, s.web.port) == ("127.0.0.1", 8080)
    assert s.asterisk.hotline == "1860"


def test_file_then_environment_precedence(tmp_path) -> None:
    path = tmp_path / "ivrserver.yaml"
    path.write_text("ami:\n  port: 6000\n  username: pbx\nweb:\n  port: 9000\n")
    s = config.load(path, environ={"IVRSERVER_AMI__PORT": "6001", "IVRSERVER_CALLBACKS__ENABLED": "no"})
    assert s.ami.port == 6001
    assert s.ami.username == "pbx"
    assert s.web.port == 9000
    assert s.callbacks.enabled is False


@pytest.mark.parametrize(("data", "env", "message"), [
    ({"ami": {"port": 70000}}, {}, "ami.port: port must be 1..65535, got 70000"),
    ({"ami": {"port": "5038"}}, {}, "ami.port: expected a whole number, got '5038'"),
    ({"ami": {"prot": 5038}}, {}, "ami.prot: unknown key; did you mean 'port'?"),
    ({"ami": {"xyzzy": 1}}, {}, f"ami.xyzzy: unknown key; allowed: {AMI_KEYS}"),
    ({"amy": {}}, {}, "amy: unknown section; did you mean 'ami'?"),
    ({"callbaks": {}}, {}, "callbaks: unknown section; did you mean 'callbacks'?"),
    ({"xyzzy": {}}, {}, f"xyzzy: unknown section; allowed: {SECTIONS}"),
    ({"event_lop": "asyncio"}, {}, "event_lop: unknown section; did you mean 'event_loop'?"),
    ({"log": {"level": "LOUD"}}, {}, "log.level: must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"),
    ({"redis": {"url": "localhost:6379"}}, {}, "redis.url: expected a redis://, rediss:// or unix:// URL, "
                                               "got 'localhost:6379'"),
    ({"callbacks": {"calling_from": "8am"}}, {}, "callbacks.calling_from: expected HH:MM, got '8am'"),
    ({"agi": {"command_timeout": 0}}, {}, "agi.command_timeout: must be greater than 0, got 0.0"),
    ({"web": {"port": True}}, {}, "web.port: expected a whole number, got True"),
    ({}, {"web": {"port": "eighty"}}, "web.port: expected a whole number, got 'eighty'"),
    ({"ami": [1, 2]}, {}, "ami: expected a mapping of keys, got [1, 2]"),
    ({"event_loop": "tokio"}, {}, "event_loop: must be one of uvloop, asyncio, got 'tokio'"),
    ({"redis": {"history_write_delay": -1}}, {}, "redis.history_write_delay: must be 0..60 seconds, got -1.0"),
])
def test_precise_errors(data, env, message) -> None:
    with pytest.raises(ConfigError) as info:
        config.from_mapping(data, env)
    assert message in info.value.errors


def test_all_errors_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        config.from_mapping({"ami": {"port": 0}, "web": {"port": -1}})
    assert len(info.value.errors) == 2


def test_unreadable_and_malformed_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("ami: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad, environ={})
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        config.load(top, environ={})


def test_describe_lists_every_key() -> None:
    keys = {row[0] for row in config.describe()}
    assert {"ami.port", "agi.port", "web.port", "redis.url", "menus.dir", "instance"} <= keys


# Only IVRSERVER_<SECTION>__<KEY> and the top-level single values are settings: the README's
# $IVRSERVER_TOKEN (menus reload), $IVRSERVER_CONFIG, the tests' IVRSERVER_KEEP_ASTERISK and
# IVRSERVER_TEST_REDIS_URL belong to something else and must not abort a command.
@pytest.mark.parametrize(("environ", "setting", "expected"), [
    ({"IVRSERVER_TOKEN": "x"}, "ami.port", 5038),
    ({"IVRSERVER_KEEP_ASTERISK": "1", "IVRSERVER_SIP_TRACE": "1"}, "ami.port", 5038),
    ({"IVRSERVER_TEST_REDIS_URL": "redis://127.0.0.1:1/0"}, "redis.url", "redis://127.0.0.1:6379/0"),
    ({"IVRSERVER_AMI": "10.0.0.2"}, "ami.host", "127.0.0.1"),          # a section is no single value
    ({"IVRSERVER_AMI__PORT": "5039"}, "ami.port", 5039),
    ({"IVRSERVER_ami__port": "5039"}, "ami.port", 5039),               # the key part is not case-sensitive
    ({"IVRSERVER_CALLBACKS__ENABLED": "off"}, "callbacks.enabled", False),
    ({"IVRSERVER_INSTANCE": "ivr-b"}, "instance", "ivr-b"),
    ({"IVRSERVER_EVENT_LOOP": "asyncio"}, "event_loop", "asyncio"),
    ({"OTHER_AMI__PORT": "1", "IVRSERVER": "1"}, "ami.port", 5038),
])
def test_environment_names_that_are_settings(environ: dict[str, str], setting: str, expected: object) -> None:
    value: object = config.load(environ=environ)
    for part in setting.split("."):
        value = getattr(value, part)
    assert value == expected


@pytest.mark.parametrize(("environ", "message"), [
    ({"IVRSERVER_AMI__PROT": "1"}, "IVRSERVER_AMI__PROT: unknown key 'prot' of section 'ami'; did you mean 'port'?"),
    ({"IVRSERVER_AIM__PORT": "1"}, "IVRSERVER_AIM__PORT: unknown section 'aim'; did you mean 'ami'?"),
    ({"IVRSERVER_REDIS__URI": "redis://x"}, "IVRSERVER_REDIS__URI: unknown key 'uri' of section 'redis'; "
                                            "did you mean 'url'?"),
    ({"IVRSERVER_AMI__XYZZY": "1"}, f"IVRSERVER_AMI__XYZZY: unknown key 'xyzzy' of section 'ami'; allowed: {AMI_KEYS}"),
    ({"IVRSERVER_AMI__PORT__X": "1"}, "IVRSERVER_AMI__PORT__X: unknown key 'port__x' of section 'ami'; "
                                      "did you mean 'port'?"),
    ({"IVRSERVER_INSTANCE__NAME": "b"}, "IVRSERVER_INSTANCE__NAME: instance is a single setting, not a "
                                        "section; set IVRSERVER_INSTANCE"),
    ({"IVRSERVER_AMI__PORT": "eighty"}, "ami.port: expected a whole number, got 'eighty'"),
    ({"IVRSERVER_AMI__\x1b[2J": "1"},   # no terminal escape reaches the screen
     f"IVRSERVER_AMI__\\x1b[2J: unknown key '\\x1b[2j' of section 'ami'; allowed: {AMI_KEYS}"),
])
def test_environment_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(environ=environ)
    assert info.value.errors == [message]


def test_environment_and_file_errors_reported_at_once(tmp_path) -> None:
    path = tmp_path / "ivrserver.yaml"
    path.write_text("ami:\n  prot: 5038\n")
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={"IVRSERVER_AIM__PORT": "1", "IVRSERVER_TOKEN": "x"})
    assert sorted(info.value.errors) == [
        "IVRSERVER_AIM__PORT: unknown section 'aim'; did you mean 'ami'?",
        "ami.prot: unknown key; did you mean 'port'?",
    ]


def test_config_file_named_by_the_environment(tmp_path) -> None:
    path = tmp_path / "ivrserver.yaml"
    path.write_text("web: {port: 9001}\n")
    assert config.load(environ={"IVRSERVER_CONFIG": str(path)}).web.port == 9001
