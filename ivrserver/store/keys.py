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

    # the case lifecycle (store/cases.py, services/cases.py, services/case_followup.py; issue 18)
    def case_changes(self) -> str:
        """STREAM of every case change (kind, case, actor, why), appended in the MULTI of the case
        write; CaseFollowup reads it with a consumer group and deletes what every handler took."""
        return f"{self.prefix}:casechanges"

    def case_changes_dead(self) -> str:
        """STREAM of case-change entries the follow-up could not read (kept for a person to look at)."""
        return f"{self.prefix}:casechanges:dead"

    def case_events(self, case_id: str) -> str:
        """LIST of the case's latest events (JSON: kind, actor, why, at, detail; the newest 200),
        lives and dies with the case (PostgreSQL's case_events keeps them all)."""
        return f"{self.prefix}:caseevents:{case_id}"

    def case_change_done(self, event_id: str) -> str:
        """HASH handler name → 1 for one change: a redelivered change skips the handlers that ran
        (expires after a week)."""
        return f"{self.prefix}:casechange:done:{event_id}"

    def case_change_failures(self, event_id: str) -> str:
        """HASH handler name → JSON {n, first, last, error} of one change's failed attempts (the
        follow-up's attempt budget, shared by every instance; expires after a week)."""
        return f"{self.prefix}:casechange:failed:{event_id}"

    def case_followup_dead(self) -> str:
        """ZSET of the follow-up's dead letters ("<entry id>.<handler>"), scored by when they died."""
        return f"{self.prefix}:casefollowup:dead"

    def case_followup_dead_letter(self, ident: str) -> str:
        """HASH one dead letter: the change's entry, its handler, last error, attempts and times
        (store/case_followup_dead.py; expires after redis.hot_days)."""
        return f"{self.prefix}:casefollowup:dead:{ident}"

    def cases_due(self) -> str:
        """ZSET case id → due epoch of every case not yet resolved or closed that has a due time
        (overdue: score < now)."""
        return f"{self.prefix}:casesdue"

    def cases_handed(self, backoffice: str) -> str:
        """ZSET case id → epoch it was handed to the back office `backoffice` (until it is closed)."""
        return f"{self.prefix}:caseshanded:{backoffice}"

    def compensation(self, compensation_id: str) -> str:
        """STRING JSON of one compensation (granted, requested, approved, refused)."""
        return f"{self.prefix}:compensation:{compensation_id}"

    def case_compensations(self, case_id: str) -> str:
        """ZSET compensation id → requested epoch, per case."""
        return f"{self.prefix}:compensations:case:{case_id}"

    def compensations_requested(self) -> str:
        """ZSET compensation id → requested epoch of those waiting for a supervisor."""
        return f"{self.prefix}:compensations:requested"

    def compensation_day(self, person: str, day: str) -> str:
        """STRING cents one person granted or approved on `day` (YYYY-MM-DD; expires after 3 days)."""
        return f"{self.prefix}:compensations:day:{person}:{day}"

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

    # mass-fault incidents (store/incidents.py, issue 19). Complaint counters are written by the
    # call's end-of-call script (store/callpath.py); all counters expire, incidents are state.
    def incident_count(self, service: str, area: str, bucket: int) -> str:
        """Complaints of one (service, area) in one short bucket (INCR, TTL window + bucket)."""
        return f"{self.prefix}:inc:n:{service}:{area}:{bucket}"

    def incident_hourly(self, service: str, area: str, hour: int) -> str:
        """Complaints of one (service, area) in one hour: the baseline (INCR, TTL baseline + 2 h)."""
        return f"{self.prefix}:inc:h:{service}:{area}:{hour}"

    def incident_pairs(self) -> str:
        """ZSET "service|area" → time of its latest complaint: what the detector looks at."""
        return f"{self.prefix}:inc:pairs"

    def incident_callers(self, service: str, area: str) -> str:
        """ZSET "customer id|number" → time of their latest complaint about the pair (TTL: kept days)."""
        return f"{self.prefix}:inc:callers:{service}:{area}"

    def incident(self, incident_id: str) -> str:
        """One incident (JSON; no TTL while active, kept `hot_days` after resolve)."""
        return f"{self.prefix}:incident:{incident_id}"

    def incidents_all(self) -> str:
        """ZSET incident id → opened at: the listing."""
        return f"{self.prefix}:incidents"

    def incidents_active(self) -> str:
        """HASH incident id → compact JSON of each active incident: read by the caller snapshot."""
        return f"{self.prefix}:incidents:active"

    def incidents_unfinished(self) -> str:
        """ZSET incident id → resolved at (renewed while an instance is scheduling its notices), of
        resolved incidents whose notices and figures are not done yet (added and removed by the
        save that resolves or archives): the detector's lease holder finishes a resolve an
        instance died in."""
        return f"{self.prefix}:incidents:unfinished"

    def incident_pair(self, service: str, area: str) -> str:
        """The active incident of a pair (SET NX: one incident per pair, across instances)."""
        return f"{self.prefix}:inc:active:{service}:{area}"

    def incident_cooldown(self, service: str, area: str) -> str:
        """Set at resolve with TTL = cool-down: the pair is not raised again meanwhile."""
        return f"{self.prefix}:inc:cooldown:{service}:{area}"

    def incident_subscribers(self, incident_id: str) -> str:
        """SET "customer id|number" of callers who pressed 1 to be told when it is fixed."""
        return f"{self.prefix}:incident:{incident_id}:subs"

    def incident_stats(self, incident_id: str) -> str:
        """HASH of what callers offered the announcement did (menu_engine.IncidentOutcome):
        absorbed (pressed 1, or heard it to its end and hung up), sent_to_queue (stayed for an
        agent, or pressed 0), went_to_menu (pressed another key), hung_up (before it had played to
        its end)."""
        return f"{self.prefix}:incident:{incident_id}:stats"

    def incident_heard(self, incident_id: str) -> str:
        """SET "customer id|number" of every caller offered the announcement (told at resolve)."""
        return f"{self.prefix}:incident:{incident_id}:heard"

    def incident_queued(self, incident_id: str) -> str:
        """SET of the contact ids of calls the announcement sent to a queue (at resolve: how many an
        agent answered, from their contact records)."""
        return f"{self.prefix}:incident:{incident_id}:queued"

    def incident_delivered(self, incident_id: str) -> str:
        """SET of the ids of the incident's resolve notices delivered (heard, or sent by SMS)."""
        return f"{self.prefix}:incident:{incident_id}:delivered"

    def incident_first(self, service: str, area: str, bucket: int) -> str:
        """The time of the first complaint in a short bucket (SET NX; TTL as the bucket's count)."""
        return f"{self.prefix}:inc:f:{service}:{area}:{bucket}"

    def incident_counted(self, contact_id: str) -> str:
        """SET of the services a contact's complaints were counted for (the IVR's report or an
        agent's `fault:<service>` disposition): each counts once per contact."""
        return f"{self.prefix}:inc:counted:{contact_id}"

    def incident_leader(self) -> str:
        """The detector's lease: one instance looks at the counters at a time."""
        return f"{self.prefix}:inc:leader"

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

    # agent preferences (issue 20 §4: the pages' language), state: no TTL
    def agent_prefs(self, agent_id: str) -> str:
        """HASH of one agent's page preferences (field "language": en | zh)."""
        return f"{self.prefix}:agentprefs:{agent_id}"

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

    def callback_seen(self, callback_id: str, attempt: int) -> str:
        """STRING what an instance's AMI observer saw of attempt n's channel `<id>-<n>` ("up",
        "originate:<outcome>", "result:<outcome>"); written only while the placed marker exists."""
        return f"{self.prefix}:callback:seen:{callback_id}:{attempt}"

    def callback_observers(self) -> str:
        """HASH instance → "<since> <through>": its AMI link up with no event lost since, every
        event received until through recorded (the takeover re-dials only on their word)."""
        return f"{self.prefix}:callbacks:observers"

    def callback_index(self) -> str:
        return f"{self.prefix}:callbacks:all"

    def callbacks_expiring(self) -> str:
        """ZSET id → epoch its finished record expires (only with `records`): those ids leave
        `callback_index()` once their record is gone."""
        return f"{self.prefix}:callbacks:expiring"

    # proactive notices (store/notices.py, services/notices.py; issue 18). A notice's call is a
    # customer-first callback (the callback keys above); these keep the notices themselves.
    def notice(self, notice_id: str) -> str:
        """STRING JSON of one notice (domain.notices.to_dict), by its id from the key (SET NX);
        expires hot_days after it is final."""
        return f"{self.prefix}:notice:{notice_id}"

    def notice_call(self, call_id: str) -> str:
        """SET of the notice ids one notice call carries (batched notices play in turn)."""
        return f"{self.prefix}:notice:call:{call_id}"

    def notices_of_case(self, case_id: str) -> str:
        """SET of the keys of notices about a case (a reopened case cancels its pending ones)."""
        return f"{self.prefix}:notices:case:{case_id}"

    def notice_pending_calls(self, customer_id: str) -> str:
        """HASH call id → due epoch of the customer's notice calls not dialed yet (batching)."""
        return f"{self.prefix}:notices:pending:{customer_id}"

    def notice_budget(self, customer_id: str) -> str:
        """ZSET call id → planned epoch of the customer's counted notice calls (the budget window;
        expires budget_days after the last one)."""
        return f"{self.prefix}:notices:budget:{customer_id}"

    def notice_lock(self, customer_id: str) -> str:
        """Short lock (SET NX PX, token) while one instance schedules or cancels a customer's notices."""
        return f"{self.prefix}:notices:lock:{customer_id}"

    def notices_sms_due(self) -> str:
        """ZSET notice id → epoch its held SMS may be sent (an SMS waits for the allowed hours)."""
        return f"{self.prefix}:notices:sms:due"

    def notices_open_calls(self) -> str:
        """ZSET notice call id → epoch from which the reconcile sweep watches it (its due time at first):
        calls whose notices may still wait for their outcome (services/notices.py reconcile)."""
        return f"{self.prefix}:notices:open"

    def notices_sms_leased(self) -> str:
        """ZSET notice id → epoch until which the instance sending its SMS holds it (then another
        may take it over; the SMS key keeps it sent once)."""
        return f"{self.prefix}:notices:sms:leased"

    # SMS and reminders from data (services/sms.py, services/reminders.py; issue 18 §4)
    def sms_sent(self, key_digest: str) -> str:
        """STRING state of one SMS key (SHA-256 of the key), claimed before the send:
        "sending <epoch> <instance>", then "done <outcome>" or "retry <outcome>" (nothing left:
        a later send with the key may try again); expires after sms.kept_days. Never the text."""
        return f"{self.prefix}:sms:{key_digest}"

    def reminders_handled(self, customer_id: str) -> str:
        """HASH attribute rule → the attribute value the scanner handled for this customer (its
        notice scheduled, or skipped as invalid/past); refreshed to expire ~2 years after a change."""
        return f"{self.prefix}:reminders:handled:{customer_id}"

    def reminder_fired(self, key_digest: str) -> str:
        """STRING set once the notice of a posted event's reminder key (SHA-256) was scheduled
        (expires after reminders.kept_days): the same event id never fires twice."""
        return f"{self.prefix}:reminders:fired:{key_digest}"

    def reminders_scan_lease(self) -> str:
        """STRING instance name: the instance walking the customers now (PX lease)."""
        return f"{self.prefix}:reminders:scan"

    # outgoing webhooks (store/webhooks.py; ids from domain/webhooks.delivery_id)
    def webhook_published(self, key_digest: str) -> str:
        """STRING set once per publish key (SHA-256 of the key), expiring after hot_days: a second
        publish with the same key sends nothing more."""
        return f"{self.prefix}:webhook:published:{key_digest}"

    def webhook_delivery(self, delivery_id: str) -> str:
        """HASH of one delivery (endpoint, event, key, body, state, attempts, log …); final ones
        expire after hot_days."""
        return f"{self.prefix}:webhook:{delivery_id}"

    def webhooks_due(self) -> str:
        """ZSET delivery id → epoch its next attempt is due."""
        return f"{self.prefix}:webhooks:due"

    def webhooks_leased(self) -> str:
        """ZSET delivery id → epoch the lease of the instance attempting it expires."""
        return f"{self.prefix}:webhooks:leased"

    def webhooks_lease_info(self) -> str:
        """HASH delivery id → "<token> <due> <claimer>" of each current lease."""
        return f"{self.prefix}:webhooks:leaseinfo"

    def webhooks_index(self) -> str:
        """ZSET every delivery id → creation epoch (the delivery log's listing)."""
        return f"{self.prefix}:webhooks:all"

    def webhooks_dead(self) -> str:
        """ZSET dead-lettered delivery id → epoch it died (supervisors list and re-queue them)."""
        return f"{self.prefix}:webhooks:dead"

    # live wallboard (services/wallboard.py): what every instance's board is rebuilt from
    def wallboard_waiting(self) -> str:
        """HASH caller uid → {"q","at","p"}: callers waiting in a queue now (state: no TTL; an entry
        leaves with the caller's leave, answer, abandon or hang-up)."""
        return f"{self.prefix}:wb:waiting"

    def wallboard_day(self, day: str) -> str:
        """HASH `<queue>|<counter>` → count of one day (wallboard.timezone); expires after that day."""
        return f"{self.prefix}:wb:day:{day}"

    def wallboard_seen(self, kind: str, queue: str, uid: str) -> str:
        """SET NX marker: this join/answer/abandon was counted once by some instance (short TTL)."""
        return f"{self.prefix}:wb:seen:{kind}:{queue}:{uid}"

    def wallboard_channel(self) -> str:
        """Pub/sub channel of applied queue changes (domain.wallboard.encode_change)."""
        return f"{self.prefix}:wb:changes"
