"""cases.yaml on disk: the case policy (due times by severity, back-office actions, compensation
authority), validated with every error pointing at its line, as routing.yaml's.

Read by the one loader of admins' files (files/yaml_source.py); the plain data goes to
domain.cases.parse_policy. The setting `cases.policy_file` names the file (default: the packaged
ivrserver/defaults/cases.yaml).
"""

from __future__ import annotations

import os
import zoneinfo

from ivrserver.domain.cases import CasePolicy, parse_policy
from ivrserver.domain.source import Issue, Severity
from ivrserver.files import yaml_source


class CasePolicyError(ValueError):
    """cases.yaml is unreadable or invalid: `problems` holds one `file:line:column: error: …` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _valid_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def load(path: str | os.PathLike[str]) -> CasePolicy:
    """Read and validate cases.yaml; raises CasePolicyError listing every problem."""
    src, issues = yaml_source.load(path, kind="case policy")
    if src is None:
        raise CasePolicyError([i.format() for i in issues])
    policy, problems = parse_policy(src.data, valid_zone=_valid_zone)
    for p in problems:
        pos = src.at(p.path, key=True)
        issues.append(Issue(src.file, pos.line, pos.column, Severity.ERROR, "cases", p.message))
    if issues or policy is None:
        raise CasePolicyError([i.format() for i in issues])
    return policy


def check(path: str | os.PathLike[str]) -> list[str]:
    """For `doctor`: every problem of the file, [] when it is valid."""
    try:
        load(path)
    except CasePolicyError as exc:
        return exc.problems
    return []
