"""Every Redis key ivrserver uses, in one place, under one configurable prefix.

Keys are built only here so that a reader can see the whole data layout at a glance and two
modules can never disagree on a name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "ivr"
    # A system of record is configured (postgres.dsn): the writers of contact records, IVR paths
    # and audit entries also append each record to `outbox()`, in the script or transaction they
    # already run (no extra round trip); record/sink.py moves the entries into PostgreSQL.
    # False (Redis-only): the outbox is never written.
    records: bool = False

    # customers
    def customer(self, customer_id: str) -> str:
        return f"{self.prefix}:customer:{customer_id}"

    def customer_ids(self) -> str:
        return f"{self.prefix}:customers"

    def phone(self, number: str) -> str:
        return f"{self.prefix}:phone:{number}"

    def account(self, account_number: str) -> str:
        return f"{self.prefix}:account:{account_number}"

    def pin_failures(self, account_number: str) -> str:
        return f"{self.prefix}:pinfail:{account_number}"

    # agent logins
    def session(self, token_digest: str) -> str:
        """A login session, by the SHA-256 of its token (the token itself is never stored)."""
        return f"{self.prefix}:session:{token_digest}"

    def login_failures(self, agent_id: str, address: str = "") -> str:
        """Failed logins of one agent from one address (the lockout counter)."""
        return f"{self.prefix}:loginfail:{agent_id}:{address or 'unknown'}"

    def address_login_failures(self, address: str) -> str:
        """Failed logins from one address, any agent."""
        return f"{self.prefix}:loginfail-addr:{address or 'unknown'}"

    def agent_login_failures(self, agent_id: str) -> str:
        """Failed logins of one agent, any address."""
        return f"{self.prefix}:loginfail-agent:{agent_id}"

    def known_login_address(self, agent_id: str, address: str) -> str:
        """An address the agent logged in from successfully (not locked out by others' failures)."""
        return f"{self.prefix}:loginok:{agent_id}:{address or 'unknown'}"

    # contact history and cases
    def contact(self, contact_id: str) -> str:
        return f"{self.prefix}:contact:{contact_id}"

    def timeline(self, customer_id: str) -> str:
        return f"{self.prefix}:timeline:{customer_id}"

    def case(self, case_id: str) -> str:
        return f"{self.prefix}:case:{case_id}"

    def open_cases(self, customer_id: str) -> str:
        return f"{self.prefix}:opencases:{customer_id}"

    def customer_cases(self, customer_id: str) -> str:
        """Every case of a customer, open or closed."""
        return f"{self.prefix}:cases:{customer_id}"

    def case_seq(self) -> str:
        return f"{self.prefix}:seq:case"

    def call_by_linkedid(self, linkedid: str) -> str:
        return f"{self.prefix}:linkedid:{linkedid}"

    def call_context(self, context_id: str) -> str:
        return f"{self.prefix}:callctx:{context_id}"

    def call_owner(self, linkedid: str) -> str:
        """The instance that writes this call's contact record (SET NX; the FastAGI side takes over)."""
        return f"{self.prefix}:callowner:{linkedid}"

    # the system of record (PostgreSQL): records on their way there (record/sink.py)
    def outbox(self) -> str:
        """Stream of contact, path and audit records waiting for the sink (only with postgres.dsn)."""
        return f"{self.prefix}:outbox"

    def outbox_if_recording(self) -> str | None:
        """The outbox when records go to PostgreSQL (`records`), else None: what writers append to."""
        return self.outbox() if self.records else None

    def record_restored(self) -> str:
        """Set once Redis holds the system of record's customers, cases and recent contacts (no
        TTL: state); missing with postgres.dsn set means Redis lost them: the warm-up re-fills it."""
        return f"{self.prefix}:record:restored"

    def outbox_dead(self) -> str:
        """Stream of outbox entries the sink could not decode (kept for a person to look at)."""
        return f"{self.prefix}:outbox:dead"

    # IVR path analytics
    def ivr_path(self, call_id: str) -> str:
        return f"{self.prefix}:ivrpath:{call_id}"

    def ivr_calls(self, menu: str) -> str:
        return f"{self.prefix}:ivrcalls:{menu}"

    def announcement(self, menu: str) -> str:
        return f"{self.prefix}:announcement:{menu}"

    # agents
    def agent_state(self, agent_id: str) -> str:
        return f"{self.prefix}:agentstate:{agent_id}"

    def agent_states(self) -> str:
        return f"{self.prefix}:agentstates"

    def agent_events(self, agent_id: str) -> str:
        return f"{self.prefix}:agentevents:{agent_id}"

    def agent_event_seq(self, agent_id: str) -> str:
        return f"{self.prefix}:seq:agentevent:{agent_id}"

    def agent_event_epoch(self, agent_id: str) -> str:
        """Random id of the agent's current numbering: a new one whenever the counter restarts at 1."""
        return f"{self.prefix}:epoch:agentevent:{agent_id}"

    def pop_channel(self) -> str:
        return f"{self.prefix}:pops"

    def pop_claim(self, agent_id: str, leg_id: str) -> str:
        """The instance that publishes the pops of one agent leg (SET NX by every instance seeing it ring)."""
        return f"{self.prefix}:popclaim:{agent_id}:{leg_id}"

    def unacked_pops(self) -> str:
        return f"{self.prefix}:unacked"

    def audit(self) -> str:
        return f"{self.prefix}:audit"

    def agent_access(self, agent_id: str) -> str:
        return f"{self.prefix}:access:{agent_id}"

    def customer_grantees(self, customer_id: str) -> str:
        """Which agents' access grants name this customer (or its contacts): revoked on delete."""
        return f"{self.prefix}:grantees:{customer_id}"

    # callbacks
    def callback(self, callback_id: str) -> str:
        return f"{self.prefix}:callback:{callback_id}"

    def callbacks_due(self) -> str:
        return f"{self.prefix}:callbacks:due"

    def callbacks_leased(self) -> str:
        return f"{self.prefix}:callbacks:leased"

    def callbacks_lease_info(self) -> str:
        """HASH id → "<token> <due> <claimer>" of each current lease."""
        return f"{self.prefix}:callbacks:leaseinfo"

    def callback_placed(self, callback_id: str, attempt: int) -> str:
        return f"{self.prefix}:callback:placed:{callback_id}:{attempt}"

    def callback_index(self) -> str:
        return f"{self.prefix}:callbacks:all"

    def callbacks_expiring(self) -> str:
        """ZSET id → epoch its finished record expires (only with `records`): those ids leave
        `callback_index()` once their record is gone."""
        return f"{self.prefix}:callbacks:expiring"
