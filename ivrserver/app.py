"""Composition root: builds adapters and services, owns every long-lived task and the shutdown.

No business rules here. Order of shutdown: stop taking calls (running ones finish or go back to
the dialplan), stop background loops, close the web server, AMI and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from aiohttp import web

from ivrserver import logs
from ivrserver.config import Settings
from ivrserver.domain.model import Case, ContactPreferences
from ivrserver.domain.notices import NoticePolicy
from ivrserver.domain.working_days import WorkingDays
from ivrserver.files import case_policy as case_policy_files
from ivrserver.files import incident_policy
from ivrserver.files import menus as menu_files
from ivrserver.files import reminders as reminder_files
from ivrserver.files import routing as routing_files
from ivrserver.files import webhooks as webhook_files
from ivrserver.metrics import Metrics
from ivrserver.pbx.ami import AmiClient
from ivrserver.pbx.asterisk_conf import ivr_queue, queue_names
from ivrserver.pbx.callback_dialer import AmiCallbackDialer, CallbackObserver
from ivrserver.pbx.fastagi import FastAgiServer
from ivrserver.pbx.messaging import AmiMessageSender
from ivrserver.record.reads import RecordArchive
from ivrserver.record.runtime import RecordRuntime, SchemaNotCurrent
from ivrserver.services import pepper as pepper_source
from ivrserver.services import work_calendar
from ivrserver.services.agent_prefs import AgentPrefsService
from ivrserver.services.agent_state import AgentStateService
from ivrserver.services.announcements import Announcements
from ivrserver.services.callbacks import (
    CallbackPlacer,
    CallbackScheduler,
    CallbackService,
    customer_lookup,
    policy_from_settings,
)
from ivrserver.services.case_followup import CaseFollowup, webhook_handler
from ivrserver.services.cases import CaseService
from ivrserver.services.contact_tracker import ContactTracker
from ivrserver.services.customers import CustomerService
from ivrserver.services.event_fanout import EventFanout
from ivrserver.services.hotline import HotlineService
from ivrserver.services.incidents import IncidentService
from ivrserver.services.menus import MenuRegistry
from ivrserver.services.messages import MessageService
from ivrserver.services.notices import NoticeService
from ivrserver.services.notify_call import NotifyCall
from ivrserver.services.policy_reload import Outcome, PolicyFile, PolicyFiles
from ivrserver.services.privacy import PrivacyService
from ivrserver.services.queue_state import QueueState
from ivrserver.services.record_warmup import RecordWarmup
from ivrserver.services.reminders import ReminderService
from ivrserver.services.reports import ReportService
from ivrserver.services.routing import RoutingService
from ivrserver.services.screen_pop import PopFeed, ScreenPopService
from ivrserver.services.sms import GatewaySms, SmsService
from ivrserver.services.speech import SpeechRenderer
from ivrserver.services.wallboard import WallboardService
from ivrserver.services.webhooks import Webhooks
from ivrserver.store import cases as case_store
from ivrserver.store import client as redis_client
from ivrserver.store import customers
from ivrserver.store.audit import AuditLog
from ivrserver.store.callbacks import CallbackStore
from ivrserver.store.incidents import IncidentStore
from ivrserver.store.keys import Keys
from ivrserver.store.notices import NoticeStore
from ivrserver.store.pops import PopStore
from ivrserver.store.reminders import ReminderStore
from ivrserver.store.sms import SmsMarkers
from ivrserver.supervision import Supervisor
from ivrserver.web import (
    api_agents,
    api_callbacks,
    api_cases,
    api_customers,
    api_docs,
    api_events,
    api_followup,
    api_incidents,
    api_menus,
    api_policies,
    api_prefs,
    api_reports,
    api_webhooks,
    backoffice,
)
from ivrserver.web.agent_ws import AgentHub
from ivrserver.web.app import HealthCheck, build_app
from ivrserver.web.auth import AUTH, Authenticator, auth_middleware, authorize_hook, require_supervisor
from ivrserver.web.limits import ConnectionGuard, GuardedSite
from ivrserver.web.wallboard_ws import WallboardHub

log = logging.getLogger("ivrserver.app")


def _working_days(settings: Settings) -> WorkingDays | None:
    """The callback calendar (`callbacks.calendar_country`), built once at start."""
    try:
        return work_calendar.for_today(settings.callbacks.calendar_country, settings.callbacks.calendar_subdivision,
                                       datetime.date.today())
    except ValueError as exc:
        raise StartupError(f"callbacks.calendar_subdivision: {exc}") from exc


class StartupError(Exception):
    """The server cannot start: a configuration file is invalid (the message says which)."""


T = TypeVar("T")
GC_GEN0, GC_GEN1, GC_GEN2 = 700, 1000, 10  # CPython's defaults are 700, 10, 10


class IvrServer:
    """One ivrserver process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.supervisor = Supervisor(self.metrics)  # every long-lived task: crashes logged, counted, restarted
        # with a system of record, contacts, paths and audit entries also go to the outbox (Keys.records)
        self.keys = Keys(settings.redis.prefix, records=bool(settings.postgres.dsn))
        self.stopping = asyncio.Event()
        self.redis: aioredis.Redis = redis_client.connect_to(
            settings.redis, decode_responses=True, socket_connect_timeout=3, socket_timeout=5,
            health_check_interval=15)
        self.ami = AmiClient(settings.ami, self.metrics)
        self.fanout = EventFanout(self.ami.events, self.metrics)
        self.fastagi = FastAgiServer(settings.agi.host, settings.agi.port, header_timeout=settings.agi.header_timeout,
                                     command_timeout=settings.agi.command_timeout, metrics=self.metrics)
        self.menus = self._build_menus()
        policy, agents = self._load_routing()
        self.pepper = self._load_pepper()
        self.agent_defs = agents.agents
        self._by_endpoint = {a.endpoint: a.id for a in agents.agents.values()}
        self.agent_state = AgentStateService(self.redis, self.keys, agents.agents,
                                             wrap_up_seconds=agents.wrap_up_seconds, ami_action=self.ami.action)
        # supervisors' reports from PostgreSQL's hourly rollups (none without postgres.dsn: 503)
        self.reports = ReportService(lambda: self.records.pool if self.records is not None else None,
                                     settings.reports, wrap_up_seconds=agents.wrap_up_seconds)
        self.tracker = ContactTracker(self.redis, self.keys, retention_days=settings.redis_keep_days,
                                      agents=self._by_endpoint, instance=settings.instance,
                                      write_delay=settings.redis.history_write_delay,
                                      default_country=settings.phone.default_region)
        self.routing = RoutingService(self.redis, self.keys, policy, agents.agents,
                                      statuses=self.agent_state.statuses_of)
        self.hotline = HotlineService(self.redis, self.keys, self.menus, self.routing, self.tracker,
                                      entry=settings.menus.entry, retention_days=settings.redis_keep_days,
                                      snapshot_timeout=settings.redis.snapshot_timeout,
                                      pepper=self.pepper.pepper, default_country=settings.phone.default_region)
        self.fastagi.route(settings.menus.entry, self.hotline.handle)
        # screen-pop: per-agent numbered events, login and audit
        self.pops = PopStore(self.redis, self.keys, backlog_seconds=settings.web.backlog_seconds)
        self.audit = AuditLog(self.redis, self.keys, hot_days=settings.redis_keep_days)
        self.privacy = PrivacyService(self.pops, self.audit)
        # outgoing webhooks: any service may publish (self.webhooks.publish); delivered by the
        # supervised "webhook-deliverer" loop when endpoints are configured
        self.webhooks = Webhooks(self.redis, self.keys, self._load_webhook_endpoints(), settings=settings.webhooks,
                                 hot_days=settings.redis.hot_days, instance=settings.instance, metrics=self.metrics,
                                 audit=self.audit.append)
        self.case_policy = self._load_case_policy()
        self.customers = CustomerService(self.redis, self.keys, pepper=self.pepper.pepper, case_policy=self.case_policy,
                                         retention_days=settings.redis_keep_days)
        if settings.postgres.dsn:  # history and audit beyond Redis's hot window (the pool opens in run())
            archive = RecordArchive(lambda: self.records.pool if self.records else None)
            self.customers.attach_archive(archive)
            self.privacy.attach_archive(archive)
        self.auth = Authenticator(self.redis, self.keys, agents.agents, agents.credentials, privacy=self.privacy,
                                  agents_file=settings.routing.agents_file,
                                  trusted_proxies=settings.security.trusted_proxies)
        # Pub/sub blocks on reads for as long as no pop is published: no socket timeout there.
        self.pubsub_redis: aioredis.Redis = redis_client.connect_to(
            settings.redis, decode_responses=True, socket_connect_timeout=3, socket_keepalive=True,
            health_check_interval=15)
        self.agent_prefs = AgentPrefsService(self.redis, self.keys, default_language=settings.web.default_language)
        self.hub = AgentHub(self.pubsub_redis, PopFeed(self.pops, self.keys), self.auth,
                            queue_size=settings.web.socket_queue, heartbeat=settings.web.heartbeat)
        self.screen_pop = ScreenPopService(self.redis, self.keys, self.hub, agents.agents,
                                           contact_id_for=self.tracker.contact_id, instance=settings.instance)
        # callbacks (virtual hold reads the live queues)
        self.queue_state = QueueState(self._agent_of_interface, self.agent_state.free_count)
        self.callback_store = CallbackStore(
            self.redis, self.keys, replicated=lambda: redis_client.wait_for_replica(self.redis, settings.redis),
            hot_days=settings.redis.hot_days)
        callback_policy = policy_from_settings(settings.callbacks, phone_region=settings.phone.default_region,
                                               working_days=_working_days(settings))
        self.dialer = AmiCallbackDialer(self.ami, self.redis, self.keys, self.callback_store,
                                        tracker=self.tracker, hotline=settings.asterisk.hotline)
        self.notices = self._build_notices(callback_policy)
        placer = CallbackPlacer(
            self.callback_store, self.dialer, callback_policy, free_agents=self.agent_state.free_agents,
            is_free=self.agent_state.is_free,
            preferences=self._preferences, endpoint_of=lambda a: self.agent_defs[a].endpoint,
            customer_dial=settings.asterisk.customer_dial, callback_context=settings.asterisk.callback_context,
            notify_context=settings.asterisk.notify_context, agent_ring_seconds=settings.callbacks.agent_ring_seconds,
            lease_seconds=settings.callbacks.lease_seconds, instance=settings.instance,
            queue_snapshot=self.queue_state.snapshot, on_placed=self.notices.on_placed,
            before_dial=self.notices.before_dial,
            customer_ring_seconds=settings.notices.ring_seconds,
            observe_interval=settings.callbacks.observe_interval, observe_margin=settings.callbacks.observe_margin)
        # What this instance's AMI link sees of every instance's callback channels (takeovers read it)
        self.callback_observer = CallbackObserver(
            self.callback_store, settings.instance, lambda: (self.ami.logged_in, self.ami.logins + self.ami.dropped),
            backlog=self.ami.events.qsize, interval=settings.callbacks.observe_interval)
        self.scheduler = CallbackScheduler(self.callback_store, placer, instance=settings.instance,
                                           poll_interval=settings.callbacks.poll_interval,
                                           lease_seconds=settings.callbacks.lease_seconds)
        self.callbacks = CallbackService(self.callback_store, callback_policy, preferences=self._preferences,
                                         customer=customer_lookup(self.redis, self.keys), grants=self._grants,
                                         audit=self.audit.append, on_due=self.scheduler.wake)
        self.backoffice = self._load_backoffice_tokens()
        self._build_cases()
        # the live wallboard (supervisors): queue changes through Redis, agent states from the fold
        conf = self._queues_conf()
        self.wallboard = WallboardService(self.redis, self.pubsub_redis, self.keys, settings.wallboard,
                                          agents=agents.agents, queue_of=ivr_queue,
                                          queues=sorted(queue_names(conf)) if conf else (),
                                          callbacks=self.callback_store, ami_action=self.ami.action)
        self.agent_state.on_change(self.wallboard.on_agent)
        self.wallboard_hub = WallboardHub(self.wallboard, self.auth, queue_size=settings.wallboard.socket_queue,
                                          heartbeat=settings.web.heartbeat)
        # the hubs' loops (pop channel listener, session sweeps) under the app's supervisor
        self.hub.supervisor = self.wallboard_hub.supervisor = self.supervisor
        self.hotline.attach_callbacks(self.callbacks)
        # notices follow their cases: outcomes noted on the case, resolved → notice, reopened → cancelled
        self.notices.attach_cases(self.cases)
        self.case_followup.register("notices", self.notices.on_case_change)
        # "press 1" on a notice call ([ivrserver-notify] runs notify?id=<call id>)
        self.notify_call = NotifyCall(self.redis, self.keys, self.callback_store, self.notices, self.routing,
                                      customer=customer_lookup(self.redis, self.keys), case=self._case,
                                      statuses=self.agent_state.statuses_of, tracker=self.tracker)
        self.fastagi.route("notify", self.notify_call.handle)
        # mass-fault incidents: complaints counted on the call path, the detector under the supervisor
        self.incidents: IncidentService | None = None
        if settings.incidents.enabled:
            self.incidents = IncidentService(
                IncidentStore(self.redis, self.keys, keep_seconds=settings.redis_keep_days * 86400),
                self._load_incident_policy(), speech=self.menus.speech, instance=settings.instance)
            self.incidents.attach(webhooks=getattr(self, "webhooks", None), notices=getattr(self, "notices", None))
            self.hotline.attach_incidents(self.incidents)
            self.customers.attach_incidents(self.incidents)  # a fault disposition is a complaint
            incidents = self.incidents  # its policy read each refresh: a reload changes the names
            self.wallboard.attach_incidents(incidents.list, policy=lambda: incidents.policy)
        # SMS to customers (sms.transport): notices go by SMS through it; reminders from data
        # (reminders.rules_file): the scanner under the supervisor, saved customers looked at at once
        self.sms = self._build_sms()
        if self.sms.transport is not None:
            self.notices.attach_sms(self.sms)
        self.reminders = ReminderService(
            ReminderStore(self.redis, self.keys, kept_seconds=settings.reminders.kept_days * 86400), self.notices,
            self._load_reminder_rules(), instance=settings.instance, interval=settings.reminders.interval,
            page_size=settings.reminders.page_size, page_pause=settings.reminders.page_pause,
            horizon=settings.reminders.horizon_days * 86400, metrics=self.metrics, audit=self.audit.append)
        self.customers.on_saved.append(self.reminders.customer_changed)
        # SIGHUP and POST /api/v1/policies/reload: the policy files read again, the old kept on error
        self.policies = self._policy_files()
        self._reload_requested = asyncio.Event()
        self._loops_started = False
        self._runner: web.AppRunner | None = None
        self.records: RecordRuntime | None = None  # PostgreSQL (postgres.dsn), built in run()
        self.web_port = settings.web.port

    # -- building -------------------------------------------------------------------------
    def _queues_conf(self) -> str | None:
        path = Path(self.settings.asterisk.config_dir) / "queues.conf"
        return str(path) if path.is_file() else None

    def _build_menus(self) -> MenuRegistry:
        sounds = Path(self.settings.asterisk.sounds_dir)
        resources, notes = menu_files.resources(str(sounds) if sounds.is_dir() else None, self._queues_conf())
        for note in notes:
            log.info("menu check: %s", note)
        speech = SpeechRenderer.from_settings(self.settings.prompts, str(sounds) if sounds.is_dir() else None)
        registry = MenuRegistry(self.settings.menus.dir, resources=resources, speech=speech)
        result = registry.reload()
        # A contact centre keeps taking calls with a broken menu file: ivrserver starts without a
        # menu (VIP and repeat-caller routing, screen-pops and callbacks work; menu callers get the
        # dialplan's fallback, the general queue), /healthz says so, and the file watch, SIGHUP or
        # the REST reload load the fixed file without a restart.
        if not result.ok:
            log.error("no valid menu at start: callers who would get the menu go to the dialplan fallback "
                      "(general queue) until the menus are fixed and reloaded; errors:\n  %s",
                      "\n  ".join(e.format() for e in result.errors))
        elif self.settings.menus.entry not in registry.current.menus:
            log.error("menus.entry: no menu named %r in %s (found: %s); menu callers go to the dialplan fallback",
                      self.settings.menus.entry, self.settings.menus.dir,
                      ", ".join(sorted(registry.current.menus)) or "none")
        return registry

    def _build_notices(self, calling: Any) -> NoticeService:
        """Proactive notices (notices.*): customer-first calls with a synthesized message."""
        notice = self.settings.notices
        sounds = Path(self.settings.asterisk.sounds_dir)
        speech = SpeechRenderer.from_settings(self.settings.prompts, str(sounds) if sounds.is_dir() else None)
        policy = NoticePolicy(max_calls=notice.max_calls, budget_days=notice.budget_days,
                              batch_seconds=notice.batch_seconds, window_days=notice.window_days,
                              default_consent=frozenset(k.strip() for k in notice.default_consent.split(",")
                                                        if k.strip()),
                              urgent_kinds=frozenset(k.strip() for k in notice.urgent_kinds.split(",") if k.strip()))
        return NoticeService(NoticeStore(self.redis, self.keys, hot_days=self.settings.redis.hot_days),
                             self.callback_store, MessageService(speech), policy, calling,
                             customer=customer_lookup(self.redis, self.keys),
                             templates={"en": notice.case_result_en, "zh": notice.case_result_zh},
                             call_texts={"press": {"en": notice.press_en, "zh": notice.press_zh},
                                         "bye": {"en": notice.bye_en, "zh": notice.bye_zh}},
                             on_due=lambda: self.scheduler.wake(),
                             business_timezone=lambda: self.routing.policy.timezone,
                             reconcile_grace=notice.reconcile_grace)

    def _build_sms(self) -> SmsService:
        """SMS exactly once per key over Asterisk MessageSend or the operator's gateway (sms.*)."""
        sms = self.settings.sms
        sender = sms.sender or self.settings.asterisk.hotline
        markers = SmsMarkers(self.redis, self.keys, kept_seconds=sms.kept_days * 86400)
        if sms.transport == "asterisk":
            return SmsService(markers, AmiMessageSender(self.ami, destination=sms.destination, sender=sender),
                              instance=self.settings.instance, metrics=self.metrics)
        if sms.transport == "gateway":
            gateway = GatewaySms(self.webhooks, sender=sender)
            if not gateway.configured():
                log.error("sms.transport is gateway but no webhook endpoint takes sms.send: every SMS fails "
                          "(not_connected) until webhooks.endpoints_file has one")
            return SmsService(markers, gateway, instance=self.settings.instance, metrics=self.metrics)
        return SmsService(markers, None, instance=self.settings.instance)

    def _load_reminder_rules(self) -> reminder_files.Rules:
        if not self.settings.reminders.enabled:
            return reminder_files.Rules()
        try:
            return reminder_files.load(self.settings.reminders.rules_file)
        except reminder_files.ReminderRulesError as exc:
            raise StartupError("reminders.rules_file invalid:\n  " + "\n  ".join(exc.problems)) from exc

    async def _case(self, case_id: str) -> Case | None:
        return await case_store.get_case(self.redis, self.keys, case_id)

    def _load_pepper(self) -> pepper_source.PepperSource:
        try:
            source = pepper_source.load(self.settings.security)
        except pepper_source.PepperError as exc:
            raise StartupError(str(exc)) from exc
        if source.development:
            log.warning("PIN hashes are keyed with the development pepper %s: set security.pepper_file "
                        "before production", source.path)
        return source

    def _load_routing(self) -> tuple[Any, routing_files.AgentsConfig]:
        try:
            return routing_files.load_routing(self.settings.routing)
        except routing_files.RoutingFileError as exc:
            raise StartupError("routing configuration invalid:\n  " + "\n  ".join(exc.problems)) from exc

    def web_app(self) -> web.Application:
        health: dict[str, HealthCheck] = {"redis": self._redis_ok, "ami": self._ami_ok, "fastagi": self._agi_ok,
                                          "menus": self._menus_ok}
        agent_api = api_agents.AgentApiContext(
            auth=self.auth, hub=self.hub, privacy=self.privacy, customers=self.customers,
            set_paused=self.agent_state.set_paused, get_state=self.agent_state.state_of)
        routes = [
            api_menus.routes(self.menus, announcements=Announcements(self.redis, self.keys), guard=require_supervisor),
            api_policies.routes(self.policies, audit=self.audit.append, guard=require_supervisor),
            api_customers.routes(self.customers, authorize_hook, default_country=self.settings.phone.default_region),
            api_cases.routes(self.cases, authorize_hook, supervisor=require_supervisor),
            api_callbacks.routes(self.callbacks),
            api_events.routes(self.reminders),
            api_webhooks.routes(self.webhooks, guard=require_supervisor),
            api_followup.routes(self.case_followup, guard=require_supervisor),
            api_reports.routes(self.reports, guard=require_supervisor),
            api_agents.routes(agent_api),
            api_prefs.routes(self.agent_prefs),
            api_docs.routes(),
        ]
        if self.incidents is not None:
            routes.append(api_incidents.routes(self.incidents))
        public = ("/api/v1/login", api_docs.PATH)
        app = build_app(self.metrics, health, routes, middlewares=[
            backoffice.middleware(self.backoffice), auth_middleware(public=public, accepted=backoffice.accepted)])
        app[AUTH] = self.auth
        self.hub.install(app)
        self.wallboard_hub.install(app)
        return app

    def _read_webhook_endpoints(self) -> tuple[Any, ...]:
        """webhooks.yaml and its secrets, read again (WebhookFileError: every problem at its line)."""
        loaded = webhook_files.load(self.settings.webhooks)
        for warning in loaded.warnings:
            log.warning("%s", warning)
        return loaded.endpoints

    def _load_webhook_endpoints(self) -> tuple[Any, ...]:
        try:
            endpoints = self._read_webhook_endpoints()
        except webhook_files.WebhookFileError as exc:
            raise StartupError("webhooks configuration invalid:\n  " + "\n  ".join(exc.problems)) from exc
        if endpoints:
            log.info("webhook endpoints loaded: %s", ", ".join(e.name for e in endpoints))
        return endpoints

    def _policy_files(self) -> PolicyFiles:
        """The files a reload reads again, each with the loader used at start. agents.yaml is not one
        of them (sessions, agent states and the wallboard are built from it): it needs a restart."""
        s = self.settings
        files = [
            PolicyFile("cases", s.cases.policy_file, lambda: case_policy_files.load(s.cases.policy_file),
                       lambda: self.case_policy, self._use_case_policy),
            PolicyFile("routing", s.routing.policy_file,
                       lambda: routing_files.load_policy(s.routing.policy_file, self.routing.agent_defs),
                       lambda: self.routing.policy,
                       lambda policy: self.routing.reload(policy, self.routing.agent_defs)),
            PolicyFile("webhooks", s.webhooks.endpoints_file, self._read_webhook_endpoints,
                       lambda: self.webhooks.endpoints, self._use_webhook_endpoints),
        ]
        incidents = self.incidents
        if incidents is not None:
            files.append(PolicyFile(
                "incidents", s.incidents.policy_file,
                lambda: incident_policy.load(s.incidents.policy_file, routing_files.KNOWN_QUEUES),
                lambda: incidents.policy, incidents.use_policy))
        if s.reminders.enabled:
            files.append(PolicyFile("reminders", s.reminders.rules_file,
                                    lambda: reminder_files.load(s.reminders.rules_file),
                                    lambda: self.reminders.rules, self._use_reminder_rules))
        return PolicyFiles(files, metrics=self.metrics)

    def _use_case_policy(self, policy: Any) -> None:
        self.case_policy = self.cases.policy = self.customers.case_policy = policy

    def _use_webhook_endpoints(self, endpoints: tuple[Any, ...]) -> None:
        self.webhooks.use_endpoints(endpoints)
        log.info("webhook endpoints now: %s", ", ".join(e.name for e in endpoints) or "none")
        self._start_optional_loops()  # the first endpoint starts the deliverer

    def _use_reminder_rules(self, rules: reminder_files.Rules) -> None:
        self.reminders.rules = rules
        self._start_optional_loops()  # the first attribute rule starts the scanner

    def _load_incident_policy(self) -> Any:
        try:
            return incident_policy.load(self.settings.incidents.policy_file, routing_files.KNOWN_QUEUES)
        except incident_policy.IncidentPolicyError as exc:
            raise StartupError("incident policy invalid:\n  " + "\n  ".join(exc.problems)) from exc

    def _load_case_policy(self) -> Any:
        try:
            return case_policy_files.load(self.settings.cases.policy_file)
        except case_policy_files.CasePolicyError as exc:
            raise StartupError("case policy invalid (cases.policy_file):\n  " + "\n  ".join(exc.problems)) from exc

    def _build_cases(self) -> None:
        """Cases (issue 18): the lifecycle service and the follow-up of every case change. Handlers
        of case changes register here: webhooks (each change → "case.<kind>"); the notices
        helper's handler goes next to it (self.case_followup.register("notices", …))."""
        self.cases = CaseService(self.redis, self.keys, self.case_policy, audit=self.audit.append,
                                 customer_exists=self._customer_exists)
        cases = self.settings.cases
        self.case_followup = CaseFollowup(
            self.redis, self.keys, consumer=self.settings.instance, max_attempts=cases.followup_max_attempts,
            max_age=cases.followup_max_age_seconds, dead_keep_days=self.settings.redis.hot_days,
            metrics=self.metrics, audit=self.audit.append)
        self.case_followup.register("webhooks", webhook_handler(self.webhooks.publish))

    async def _customer_exists(self, customer_id: str) -> bool:
        return await self.customers.get(customer_id) is not None

    def _load_backoffice_tokens(self) -> backoffice.BackofficeTokens:
        try:
            tokens = backoffice.BackofficeTokens.load(self.settings.web.backoffice_tokens_file)
        except backoffice.BackofficeTokensError as exc:
            raise StartupError("\n  ".join(exc.problems)) from exc
        if len(tokens):
            log.info("back-office tokens loaded: %d", len(tokens))
        return tokens

    # -- lookups the features need ------------------------------------------------------------
    async def _grants(self, agent_id: str) -> set[str]:
        """The customers an agent holds a live access grant for (handling their call)."""
        return await self.privacy.granted(agent_id)

    async def _preferences(self, customer_id: str) -> ContactPreferences | None:
        customer = await self.customers.get(customer_id)
        return customer.preferences if customer else None

    def _agent_of_interface(self, interface: str) -> str | None:
        return self._by_endpoint.get(interface)

    async def _refresh_queue_members(self) -> None:
        """After every AMI login: the state of every queue member, so routing is right after a restart."""
        response = await self.ami.action("QueueStatus", timeout=10)
        for message in response if isinstance(response, list) else [response]:
            if message.get("Event") == "QueueMember":
                self.ami.feed(message)

    # -- health ---------------------------------------------------------------------------
    async def _redis_ok(self) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(2):
                await self.redis.ping()
            return True, "PONG"
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"

    async def _ami_ok(self) -> tuple[bool, str]:
        if self.ami.logged_in:
            return True, f"logged in to {self.settings.ami.host}:{self.settings.ami.port}"
        return False, self.ami.login_error or "not connected"

    async def _menus_ok(self) -> tuple[bool, str]:
        live = self.menus.current
        if self.settings.menus.entry in live.menus:
            return True, f"version {live.version}"
        return False, f"no valid menu {self.settings.menus.entry!r}: callers go to the dialplan fallback"

    async def _agi_ok(self) -> tuple[bool, str]:
        if self.fastagi.serving:
            return True, f"listening on {self.settings.agi.host}:{self.fastagi.port}, {self.fastagi.active_calls} calls"
        return False, "not listening"

    # -- running --------------------------------------------------------------------------
    def reload_menus(self) -> None:
        result = self.menus.reload()
        self.metrics.menu_reloads.labels("ok" if result.ok else "rejected").inc()

    async def reload_all(self) -> list[Outcome]:
        """What SIGHUP does: the menus and every policy file (file reads in worker threads)."""
        await asyncio.to_thread(self.reload_menus)
        return await self.policies.reload()

    def request_reload(self) -> None:
        """The SIGHUP handler: the supervised "reload-signal" loop reloads, off the signal handler."""
        self._reload_requested.set()

    async def _reload_on_request(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            await self.reload_all()

    def _start_optional_loops(self) -> None:
        """The loops that run only when their files ask for them: at start, and when a reload
        brings the first webhook endpoint or attribute reminder rule (they stay, idle, after)."""
        if not self._loops_started:
            return
        if self.webhooks.endpoints and "webhook-deliverer" not in self.supervisor.tasks:
            self.supervisor.start("webhook-deliverer", self.webhooks.run)
        if self.reminders.rules.attributes and "reminder-scanner" not in self.supervisor.tasks:
            self.supervisor.start("reminder-scanner", self.reminders.run)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Start everything, serve until `stopping` is set, then shut down in order."""
        if self.settings.postgres.dsn:
            self.records = RecordRuntime(self.settings.postgres, self.redis, self.keys, instance=self.settings.instance)
            self.records.reports_every = self.settings.reports.roll_interval
            try:
                await self.records.open()
            except SchemaNotCurrent as exc:
                await self.redis.aclose()
                await self.pubsub_redis.aclose()
                raise StartupError(f"postgres.dsn: {exc}") from exc
        try:
            await customers.load_scripts(self.redis)
        except Exception as exc:  # Redis may come later; calls are still served (as unknown callers)
            log.error("Redis not reachable at start", extra={"error": str(exc)})
        with contextlib.suppress(Exception):
            await self.agent_state.start()
        self.wallboard.start_agents(self.agent_state.records())
        self.ami.login_hooks.append(self._refresh_queue_members)
        self.ami.login_hooks.append(self.wallboard.reconcile)  # callers waiting as Asterisk lists them
        await self.ami.start()
        await self.fastagi.start()
        self._runner = web.AppRunner(self.web_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        # header timeout and connection cap: aiohttp has neither (web/limits.py)
        self.web_guard = ConnectionGuard(header_timeout=self.settings.web.header_timeout,
                                         max_connections=self.settings.web.max_connections, metrics=self.metrics)
        site = GuardedSite(self._runner, self.settings.web.host, self.settings.web.port, guard=self.web_guard,
                           access_log=None)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.web_port = server.sockets[0].getsockname()[1]
        # AMI events: bookkeeping folds run in place, features with I/O get a queue of their events
        self.fanout.on_event("queue-state", self.queue_state.handle)
        self.fanout.on_event("contact-tracker", self.tracker.on_event)
        self.fanout.on_event("callback-results", self.dialer.on_event)
        self.fanout.on_event("callback-observer", self.callback_observer.on_event)
        # Every long-lived loop runs under the supervisor: a crash is logged, counted and restarted,
        # never the end of the process. A consumer keeps its subscription queue across restarts.
        agent_events = self.fanout.subscribe(accepts=self.agent_state.wants)
        pop_events = self.fanout.subscribe(accepts=self.screen_pop.wants)
        wallboard_events = self.fanout.subscribe(accepts=self.wallboard.wants)
        supervise = self.supervisor.start
        supervise("ami-fanout", self.fanout.run)
        supervise("agent-state", lambda: self.agent_state.run(agent_events))
        supervise("screen-pop", lambda: self.screen_pop.run(pop_events))
        supervise("wallboard-events", lambda: self.wallboard.run(wallboard_events))
        supervise("wallboard-listener", self.wallboard.listen)
        supervise("wallboard-ticker", self.wallboard.tick)
        supervise("contact-sweeper", self.tracker.run)
        supervise("callback-observer", self.callback_observer.run)
        supervise("case-followup", self.case_followup.run)
        supervise("notice-sms", lambda: self.notices.run_sms(poll_interval=self.settings.notices.sms_poll_interval))
        supervise("notice-reconcile", lambda: self.notices.run_reconcile(
            interval=self.settings.notices.reconcile_interval))
        if self.records is not None and self.records.sink is not None:
            supervise("record-sink", self.records.sink.run)
            supervise("record-upkeep", self.records.upkeep)
            if self.records.pool is not None:  # Redis re-filled from PostgreSQL whenever it lost its data
                warmup = RecordWarmup(self.redis, self.keys, self.records.pool,
                                      retention_days=self.settings.redis_keep_days)
                supervise("record-warmup", warmup.run)
        if self.settings.callbacks.enabled:
            supervise("callback-scheduler", self.scheduler.run)
        supervise("reload-signal", self._reload_on_request)
        self._loops_started = True
        self._start_optional_loops()
        if self.incidents is not None:
            supervise("incident-detector", self.incidents.run)
        if self.settings.menus.watch:
            supervise("menu-watch", lambda: self.menus.watch(self.settings.menus.watch_interval))
        # Everything built so far lives as long as the process: keep it out of the collector's scans
        # (full collections over it were the long tail of call latency under load).
        gc.freeze()
        # Calls in flight keep their objects alive for seconds, so every gen-1 collection (by default
        # after 10 gen-0 runs, ~1/s under load) re-walked them all: 10-20 ms pauses that stalled every
        # call at once and made the per-command p99. Garbage here is freed by reference counting,
        # cycles are rare: collect gen 1 after 1000 gen-0 runs instead (bench/fastagi_bench.py).
        gc.set_threshold(GC_GEN0, GC_GEN1, GC_GEN2)
        log.info("ivrserver running", extra={"agi": f"{self.settings.agi.host}:{self.fastagi.port}",
                                             "web": f"http://{self.settings.web.host}:{self.web_port}"})
        if ready is not None:
            ready.set()
        try:
            await self.stopping.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        log.info("shutting down: no new calls; running calls get %ss", self.settings.agi.drain_timeout)
        await self.fastagi.stop(self.settings.agi.drain_timeout)
        await self.supervisor.stop()
        if self.incidents is not None:
            await self.incidents.close()  # resolve notices in progress: the lease holder finishes them
        await self.hotline.close()  # end-of-call writes still in flight (a slow Redis)
        await self.tracker.close()  # contact records still waiting for their deferred write
        if self.records is not None:
            await self.records.close(self.settings.postgres.drain_timeout)  # the outbox, into PostgreSQL
        if self._runner is not None:
            await self._runner.cleanup()
        await self.ami.close()
        await self.redis.aclose()
        await self.pubsub_redis.aclose()
        log.info("stopped")


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the menus and the policy files."""
    server = IvrServer(settings)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, server.stopping.set)
    loop.add_signal_handler(signal.SIGINT, server.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, server.request_reload)
    await server.run()


def run_on_loop(coro: Coroutine[Any, Any, T], event_loop: str) -> T:
    """Run `coro` to completion on the configured event loop (`Settings.event_loop`)."""
    if event_loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def main(settings: Settings) -> int:
    logs.setup(settings.log.level, settings.log.format)
    try:
        run_on_loop(serve(settings), settings.event_loop)
    except StartupError as exc:
        log.error(str(exc))
        return 2
    return 0
