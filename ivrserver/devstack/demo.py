"""The demo data of `make run` (scripts/demo-customers.yaml, scripts/demo-agents.yaml): loading it
into Redis, and what a newcomer should try with it.

The banner's facts are derived, never typed in: which agent the demo VIP reaches is what the
routing policy in use decides for that customer, with every agent free (the same `route()` the
server runs), so banner, README and the call agree.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ivrserver.config import Settings
from ivrserver.devstack.process import REPO_DIR, run_command
from ivrserver.domain.model import (
    AgentState,
    AgentStatus,
    CallerSnapshot,
    Case,
    CaseStatus,
    Customer,
    Segment,
    Tier,
)
from ivrserver.domain.routing import route
from ivrserver.files.routing import load_routing

DEMO_CUSTOMERS = REPO_DIR / "scripts" / "demo-customers.yaml"


@dataclass(frozen=True)
class DemoFacts:
    vip_id: str
    vip_number: str          # the VIP's first phone: `make call CALLER=<it> DIGITS=`
    vip_agent: str | None    # who the VIP's call rings first (None: a queue or the menu)
    vip_reason: str          # the routing decision's reason, as the contact record will say
    supervisor: str | None   # an agent with supervisor rights (REST reads of every record)


def _customer(raw: dict[str, Any]) -> Customer:
    return Customer(id=str(raw["id"]), name=str(raw.get("name", "")),
                    phones=tuple(str(p) for p in raw.get("phones", ())),
                    tier=Tier(raw.get("tier", "standard")), segment=Segment(raw.get("segment", "individual")),
                    language=str(raw.get("language", "en")), account_manager=raw.get("account_manager"))


def demo_facts(settings: Settings, now: datetime | None = None,
               customers_file: Path = DEMO_CUSTOMERS) -> DemoFacts:
    """What the demo VIP's call does under `settings.routing` (policy and agents files)."""
    data = yaml.safe_load(customers_file.read_text(encoding="utf-8")) or {}
    vip_raw = next(c for c in data.get("customers", []) if c.get("tier") == "vip")
    vip = _customer(vip_raw)
    cases = tuple(Case(id=f"demo-{i}", customer_id=vip.id, status=CaseStatus.OPEN, summary=str(c.get("summary", "")),
                       opened_at=0.0, owner_agent=c.get("owner_agent"), severity=int(c.get("severity", 3)))
                  for i, c in enumerate(data.get("cases", [])) if c.get("customer_id") == vip.id)
    policy, agents = load_routing(settings.routing)
    now = now or datetime.now(UTC)
    free = {a: AgentStatus(agent_id=a, state=AgentState.READY, since=0.0) for a in agents.agents}
    decision = route(CallerSnapshot(number=vip.phones[0], customer=vip, open_cases=cases), free, agents.agents,
                     now, policy)
    supervisor = next((a.id for a in agents.agents.values() if a.supervisor), None)
    reason = decision.reason
    for case in cases:      # their ids here are made up: the reason reads well without them
        reason = reason.replace(f" #{case.id}", "")
    return DemoFacts(vip_id=vip.id, vip_number=vip.phones[0], vip_agent=decision.agent_id,
                     vip_reason=reason, supervisor=supervisor)


async def seed_demo(settings_file: Path, customers_file: Path = DEMO_CUSTOMERS) -> str:
    """Import the demo customers and cases with the stack's settings file (its Redis, key prefix
    and PIN hashing): upserts, safe at every start. The importer's summary line."""
    code, out, err = await run_command([sys.executable, "-m", "ivrserver", "-c", str(settings_file), "customers",
                                        "import", str(customers_file)], timeout=60)
    text = (out or err).strip()
    return text.splitlines()[-1] if text else f"demo import exit {code}"
