"""routing.yaml and agents.yaml on disk: load, validate, and point every error at its line.

Read by the one loader of admins' files (files/yaml_source.py: line and column of every value,
duplicate keys refused, nesting and alias limits), so every error reads as a menu's does,
`file:line:column: error: where: what`; the plain data then goes to
domain.routing.parse_policy / parse_agents here.

agents.yaml::

    wrap_up_seconds: 10          # after a call an agent is not offered calls for this long
    agents:
      - id: agent1001
        name: Wang Fang
        endpoint: PJSIP/agent1001   # the dial string (TECH/resource)
        tiers: [vip, gold]
        skills: [billing, faults]
        supervisor: false
        password_hash: null         # reserved for the agent web login
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from ivrserver.config import RoutingSettings
from ivrserver.domain import suggest
from ivrserver.domain.model import Agent, Tier
from ivrserver.domain.routing import Policy, parse_policy, validate_policy
from ivrserver.domain.source import Issue, Severity, Source
from ivrserver.files import yaml_source

# Queues of the shipped Asterisk configuration (asterisk-config/queues.conf, as `ivr-<name>`);
# `doctor` may pass queues.conf's own.
KNOWN_QUEUES: tuple[str, ...] = ("vip", "general", "billing", "faults", "sales")
# A list of thousands of agents is a normal file; the loader's alias limit only has to stop a
# small file expanding to millions of values (1 MB holds at most ~500,000 values without aliases).
MAX_AGENT_VALUES = yaml_source.MAX_FILE_BYTES // 2
DEFAULT_WRAP_UP_SECONDS = 10.0

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENDPOINT = re.compile(r"^[A-Za-z][A-Za-z0-9]*/[^\s,;()&|]+$")
_AGENT_KEYS = ("id", "name", "endpoint", "tiers", "skills", "supervisor", "password_hash")
_TOP_AGENT_KEYS = ("wrap_up_seconds", "agents")

Path_ = tuple[str | int, ...]


class RoutingFileError(ValueError):
    """A routing or agents file is unreadable or invalid; `problems` holds one line per error
    (`file:line:column: error: message`, as menus), `issues` the same as `Issue`s (none for data
    that came from no file)."""

    def __init__(self, problems: list[str], issues: list[Issue] | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.issues = issues or []


@dataclass(frozen=True)
class AgentsConfig:
    agents: Mapping[str, Agent]
    wrap_up_seconds: float = DEFAULT_WRAP_UP_SECONDS
    # agent id → password hash (scripts/hash-password) for the agent web login; agents without one
    # cannot log in with a password.
    credentials: Mapping[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Reading: the one YAML loader (files/yaml_source.py), one error format


def _read(path: str | os.PathLike[str], max_values: int) -> tuple[Source | None, list[Issue]]:
    return yaml_source.load(path, kind="routing", max_values=max_values)


def _issue(src: Source, path: Path_, code: str, text: str) -> Issue:
    pos = src.at(path, key=True)
    return Issue(src.file, pos.line, pos.column, Severity.ERROR, code, text)


def _raise(issues: list[Issue]) -> NoReturn:
    raise RoutingFileError([i.format() for i in issues], issues)


# ---------------------------------------------------------------------------------------------
# agents.yaml


def _agent_problems(data: object) -> tuple[AgentsConfig | None, list[tuple[Path_, str]]]:
    """(config or None, [(path, "where: what")]) for agents.yaml data."""
    problems: list[tuple[Path_, str]] = []
    if not isinstance(data, Mapping):
        problems.append(((), f"expected a mapping with {', '.join(_TOP_AGENT_KEYS)}, got {data!r}"))
        return None, problems
    for key in data:
        if key not in _TOP_AGENT_KEYS:
            problems.append(((str(key),), f'unknown key "{key}"; allowed: {", ".join(_TOP_AGENT_KEYS)}'
                             + _mean(key, _TOP_AGENT_KEYS)))
    wrap = data.get("wrap_up_seconds", DEFAULT_WRAP_UP_SECONDS)
    if isinstance(wrap, bool) or not isinstance(wrap, (int, float)) or not 0 <= wrap <= 3600:
        problems.append((("wrap_up_seconds",), f"wrap_up_seconds: expected seconds 0..3600, got {wrap!r}"))
    raw_agents = data.get("agents")
    if not isinstance(raw_agents, list) or not raw_agents:
        problems.append((("agents",), f"agents: expected a non-empty list of agents, got {raw_agents!r}"))
        return None, problems
    agents: dict[str, Agent] = {}
    endpoints: dict[str, str] = {}
    credentials: dict[str, str] = {}
    for i, raw in enumerate(raw_agents):
        before = len(problems)
        agent = _agent(raw, i, agents, endpoints, problems)
        if agent is not None and len(problems) == before:
            agents[agent.id] = agent
            endpoints[agent.endpoint.lower()] = agent.id
            if isinstance(raw.get("password_hash"), str):
                credentials[agent.id] = raw["password_hash"]
    if problems:
        return None, problems
    return AgentsConfig(agents=agents, wrap_up_seconds=float(wrap), credentials=credentials), problems


def _agent(raw: object, i: int, agents: Mapping[str, Agent], endpoints: Mapping[str, str],
           problems: list[tuple[Path_, str]]) -> Agent | None:
    agent_id = raw.get("id") if isinstance(raw, Mapping) else None
    where = f"agent #{i + 1}" + (f" ({agent_id})" if isinstance(agent_id, str) else "")

    def bad(key: str, message: str) -> None:
        problems.append((("agents", i, key), f"{where}: {key}: {message}"))

    if not isinstance(raw, Mapping):
        problems.append((("agents", i), f"{where}: expected a mapping with {', '.join(_AGENT_KEYS)}, got {raw!r}"))
        return None
    for key in raw:
        if key not in _AGENT_KEYS:
            bad(str(key), f'unknown key; allowed: {", ".join(_AGENT_KEYS)}' + _mean(key, _AGENT_KEYS))
    if not isinstance(agent_id, str) or not _ID.match(agent_id):
        bad("id", f"expected an id (letters, digits, _ . -), got {agent_id!r}")
    elif agent_id in agents:
        bad("id", f'duplicate agent id "{agent_id}"')
    name = raw.get("name", agent_id)
    if not isinstance(name, str) or not name.strip():
        bad("name", f"expected text, got {name!r}")
    endpoint = raw.get("endpoint")
    if not isinstance(endpoint, str) or not _ENDPOINT.match(endpoint):
        bad("endpoint", f"expected a dial string TECH/resource like PJSIP/agent1001, got {endpoint!r}")
    elif endpoint.lower() in endpoints:
        bad("endpoint", f"{endpoint} is also the endpoint of {endpoints[endpoint.lower()]}")
    tiers = [t.value for t in Tier]
    agent_tiers = raw.get("tiers", [])
    if not isinstance(agent_tiers, list):
        bad("tiers", f"expected a list of tiers ({', '.join(tiers)}), got {agent_tiers!r}")
    else:
        for tier in agent_tiers:
            if tier not in tiers:
                bad("tiers", f"unknown tier {tier!r}; allowed: {', '.join(tiers)}" + _mean(tier, tiers))
    skills = raw.get("skills", [])
    if not isinstance(skills, list) or not all(isinstance(s, str) and _ID.match(s) for s in skills):
        bad("skills", f"expected a list of skill names, got {skills!r}")
    supervisor = raw.get("supervisor", False)
    if not isinstance(supervisor, bool):
        bad("supervisor", f"expected true or false, got {supervisor!r}")
    password_hash = raw.get("password_hash")
    if password_hash is not None and not isinstance(password_hash, str):
        bad("password_hash", "expected text or null")
    if not (isinstance(agent_id, str) and isinstance(endpoint, str) and isinstance(name, str)
            and isinstance(agent_tiers, list) and isinstance(skills, list) and isinstance(supervisor, bool)):
        return None
    return Agent(id=agent_id, name=name, endpoint=endpoint, tiers=tuple(agent_tiers), skills=tuple(skills),
                 supervisor=supervisor)


def _mean(word: object, allowed: Collection[str]) -> str:
    hint = suggest.did_you_mean(word, allowed, quote='"')
    return f"; {hint}" if hint else ""


def parse_agents(data: object) -> AgentsConfig:
    """agents.yaml data → AgentsConfig; raises RoutingFileError (without line numbers) on problems."""
    config, problems = _agent_problems(data)
    if config is None:
        raise RoutingFileError([text for _, text in problems])
    return config


def load_agents(path: str | os.PathLike[str]) -> AgentsConfig:
    src, issues = _read(path, MAX_AGENT_VALUES)
    if src is None:
        _raise(issues)
    config, problems = _agent_problems(src.data)
    issues += [_issue(src, p, "agents", text) for p, text in problems]
    if issues or config is None:
        _raise(issues)
    return config


# ---------------------------------------------------------------------------------------------
# routing.yaml


def load_policy(path: str | os.PathLike[str], agents: Mapping[str, Agent] | None = None,
                queues: Collection[str] | None = KNOWN_QUEUES) -> Policy:
    """Read and validate a routing policy; `{agent: ID}` targets are checked against `agents`."""
    src, issues = _read(path, yaml_source.MAX_VALUES)
    if src is None:
        _raise(issues)
    agent_ids = None if agents is None else set(agents)
    problems = validate_policy(src.data, agent_ids=agent_ids, queues=queues)
    issues += [_issue(src, p.path, "routing", str(p)) for p in problems]
    if issues:
        _raise(issues)
    return parse_policy(src.data, agent_ids=agent_ids, queues=queues)


def load_routing(settings: RoutingSettings,
                 queues: Collection[str] | None = KNOWN_QUEUES) -> tuple[Policy, AgentsConfig]:
    """Both files named by the settings; every problem of both is reported at once."""
    problems: list[str] = []
    agents: AgentsConfig | None = None
    try:
        agents = load_agents(settings.agents_file)
    except RoutingFileError as exc:
        problems += exc.problems
    try:
        policy = load_policy(settings.policy_file, agents.agents if agents else None, queues)
    except RoutingFileError as exc:
        problems += exc.problems
    if problems or agents is None:
        raise RoutingFileError(problems)
    return policy, agents


def check(settings: RoutingSettings, queues: Collection[str] | None = KNOWN_QUEUES) -> list[str]:
    """For `doctor`: every problem of the routing and agents files, [] when both are valid."""
    try:
        load_routing(settings, queues)
    except RoutingFileError as exc:
        return exc.problems
    return []
