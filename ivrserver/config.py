"""Settings: frozen dataclasses, one per external system, from a YAML file plus IVRSERVER_* env.

Precedence: defaults < YAML file < environment. An environment variable names a key by its path,
upper-cased and joined with `__`: `IVRSERVER_AMI__PORT=5039` sets `ami.port`, and the top-level
single values have no `__`: `IVRSERVER_INSTANCE`, `IVRSERVER_EVENT_LOOP`. Any other `IVRSERVER_*`
variable (`IVRSERVER_CONFIG`, `IVRSERVER_TOKEN`, test switches) is not a setting and is ignored.
Every value is validated at start; errors name the key, what was wrong and what is allowed (or,
for a near miss, "did you mean 'port'?").
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ivrserver.domain.suggest import did_you_mean

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
ENV_PREFIX = "IVRSERVER_"


class ConfigError(ValueError):
    """One or more invalid settings; `errors` lists them one per line."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "ivr"
    # Retention of contact history and IVR paths, in days (Redis-only: Redis is their only store).
    retention_days: int = 365
    # With postgres.dsn set, what Redis keeps of contacts, timelines, IVR paths and audit entries
    # (the call path reads only recent ones; PostgreSQL keeps them all), instead of retention_days.
    hot_days: int = 30
    # A call's contact-record changes are collected this long and written once (0: every change at once).
    history_write_delay: float = 0.5
    # Longest a caller waits for their snapshot before the first prompt (and for the end-of-call
    # write); past it the caller is served as unknown: a frozen Redis costs a caller this, not 5 s.
    snapshot_timeout: float = 0.3
    # High availability: "host:port,host:port,…" of Redis Sentinels; the primary of
    # `sentinel_master` is used (redis.url then gives only the database number and password).
    sentinels: str = ""
    sentinel_master: str = "ivrserver"
    # After marking a callback attempt placed, wait up to this long for a replica to hold the mark
    # (WAIT 1), so a failover cannot forget it and dial the customer twice; 0: don't wait.
    replica_wait_ms: int = 500


@dataclass(frozen=True)
class AmiSettings:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "ivrserver"
    secret: str = "ivrserver"
    action_timeout: float = 5.0
    ping_interval: float = 5.0
    # No bytes from Asterisk for this long closes the socket and forces a reconnect.
    silence_timeout: float = 20.0
    reconnect_max_delay: float = 10.0


@dataclass(frozen=True)
class AgiSettings:
    host: str = "127.0.0.1"
    port: int = 4573
    header_timeout: float = 5.0
    # Longest wait for one AGI reply; a prompt plus its input timeout must fit inside.
    command_timeout: float = 120.0
    # On shutdown, running calls get this long to finish before they are handed to the dialplan.
    drain_timeout: float = 10.0


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Agent sockets: bounded per-socket queue and missed-pop backlog.
    socket_queue: int = 256
    backlog_seconds: int = 3600
    heartbeat: float = 15.0
    # Back-office tokens for /api/v1/callbacks: a YAML file `name: "sha256:<hex>"` ('' = none).
    backoffice_tokens_file: str = ""
    # A connection must send a request's headers within this many seconds, else it is closed.
    header_timeout: float = 10.0
    # Open HTTP connections (websockets included) at most; past it new ones are closed at once.
    max_connections: int = 2000
    # The pages' language for an agent who has not chosen one (issue 20 §4): "en", "zh", or "auto"
    # (the browser's Accept-Language, else English). Each agent's own choice wins (PUT /api/v1/me/preferences).
    default_language: str = "auto"


@dataclass(frozen=True)
class AsteriskSettings:
    # Where `doctor` and `menus check` read Asterisk's own configuration and sounds.
    config_dir: str = "/etc/asterisk"
    sounds_dir: str = "/usr/share/asterisk/sounds"
    hotline: str = "1860"
    dialplan_context: str = "ivrserver-inbound"
    callback_context: str = "ivrserver-callback"
    notify_context: str = "ivrserver-notify"
    # How a customer number is dialled for callbacks: {number} is replaced.
    customer_dial: str = "PJSIP/{number}@customers"


@dataclass(frozen=True)
class MenuSettings:
    dir: str = str(REPO_DIR / "menus")
    entry: str = "hotline"
    watch: bool = True
    watch_interval: float = 1.0


@dataclass(frozen=True)
class PromptSettings:
    # Text prompts are synthesized when menus are checked or loaded, never during a call. Both
    # commands run without a shell; {voice} {wav} {text_file} {out} are replaced per argument.
    synthesizer: str = "espeak-ng -v {voice} -w {wav} -f {text_file}"
    # gain -n -1: espeak's peaks clip when resampled; silence … reverse silence … reverse trims the
    # synthesizer's own leading and trailing silence (~0.3 s a clip), so Mandarin numbers played
    # word by word (四 十 二 元 五 角) run on instead of halting after each word.
    convert: str = ("sox -q {wav} -r 8000 -c 1 -b 16 -e signed-integer -t raw {out} gain -n -1 "
                    "silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse")
    # language=voice of the synthesizer, comma-separated; a text prompt's language must be here.
    voices: str = "zh=cmn,en=en-us"
    # Where rendered audio is written ('' = <asterisk.sounds_dir>/ivrserver, or a user cache
    # directory when there is no sounds directory); Asterisk must be able to read it.
    cache_dir: str = ""
    # The cache directory as Asterisk sees it ('' = the sounds-relative name when cache_dir is
    # under asterisk.sounds_dir, else cache_dir itself).
    asterisk_dir: str = ""
    concurrency: int = 2  # synthesizer processes at once


@dataclass(frozen=True)
class RoutingSettings:
    policy_file: str = str(PACKAGE_DIR / "defaults" / "routing.yaml")
    agents_file: str = str(PACKAGE_DIR / "defaults" / "agents.yaml")


@dataclass(frozen=True)
class CaseSettings:
    # The case policy (cases.yaml: due hours by severity, back-office actions, compensation
    # authority), validated at start like routing.yaml (files/case_policy.py).
    policy_file: str = str(PACKAGE_DIR / "defaults" / "cases.yaml")
    # The case follow-up (services/case_followup.py) retries a handler (webhooks, notices) failing on
    # a change with backoff (1 s doubling, at most a minute apart); after this many failures, or this
    # long after its first failure, that handler's part of the change goes to the dead letters
    # (supervisors: GET /api/v1/case-followup/dead, retry) and the change's other handlers go on.
    followup_max_attempts: int = 20
    followup_max_age_seconds: float = 86400.0


@dataclass(frozen=True)
class CallbackSettings:
    enabled: bool = True
    poll_interval: float = 1.0  # longest sleep; known due times and own requests wake it sooner
    lease_seconds: float = 60.0
    # Company-wide calling hours (local time of the customer).
    calling_from: str = "08:00"
    calling_until: str = "21:00"
    max_attempts: int = 3
    agent_ring_seconds: int = 20
    grace_seconds: int = 120
    # Public holidays and moved working days of this country (ISO 3166, `holidays` library;
    # '' = none): no callback is placed on a public holiday unless the customer allows it.
    calendar_country: str = ""
    calendar_subdivision: str = ""
    # Every instance records the callback channels its AMI link sees and, this often, that the
    # link has been up with nothing lost; a job whose dead holder marked an attempt and was never
    # seen dialing it is re-dialed only on that word. The margin covers clock skew and event delay.
    observe_interval: float = 1.0
    observe_margin: float = 2.0


@dataclass(frozen=True)
class PhoneSettings:
    # ISO 3166 region whose national numbers the caller IDs, imports and agents use ('' = none:
    # only numbers written with + or 00 become E.164). Valid numbers are stored in E.164.
    default_region: str = "CN"


@dataclass(frozen=True)
class SecuritySettings:
    # File holding the server-side pepper that keys PIN hashes (at least 32 characters, e.g. the
    # output of `openssl rand -hex 32`; mode 0600). Never stored in Redis or exported.
    pepper_file: str = ""
    # The pepper itself, meant for the environment (IVRSERVER_SECURITY__PEPPER); pepper_file wins.
    pepper: str = ""
    # Neither set: a development pepper is generated here (0600) on first use; `doctor` warns.
    dev_pepper_file: str = "~/.local/state/ivrserver/dev-pepper"
    # Comma-separated addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For is
    # believed for login limits and audit; empty: the peer address is the client.
    trusted_proxies: str = ""


@dataclass(frozen=True)
class PostgresSettings:
    # The system of record; "" = not configured (`make run` and the tests start a private cluster).
    dsn: str = ""
    pool_size: int = 10
    # Retention per partitioned table, in days: whole months older than this are dropped.
    contacts_retention_days: int = 730
    paths_retention_days: int = 365
    audit_retention_days: int = 2555
    # The outgoing webhooks' delivery log (webhook_deliveries), by month of creation.
    webhooks_retention_days: int = 365
    # At shutdown, records still in the Redis outbox are written for at most this long (the rest
    # wait in Redis for the next start).
    drain_timeout: float = 5.0
    # When little is waiting, the sink lets the outbox collect this long between two batches: fewer
    # PostgreSQL transactions and Redis round trips per call (0: write each entry as it arrives).
    write_interval: float = 0.5


@dataclass(frozen=True)
class WebhookSettings:
    # Outgoing webhooks (services/webhooks.py): the endpoints file (webhooks.yaml: name, url, events,
    # secret_env or secret_file, optional timeout and max_attempts); '' = no endpoints, nothing is sent.
    endpoints_file: str = ""
    # One attempt's whole request (connect, send, answer) at most this long; an endpoint may override.
    timeout_seconds: float = 10.0
    # Attempts before a delivery goes to the dead letters (an endpoint may override).
    max_attempts: int = 8
    # Retry after a failed attempt n: backoff_base_seconds * 2^(n-1), at most backoff_max_seconds,
    # minus up to half of it at random (jitter); a 429/503's Retry-After (up to an hour) wins.
    backoff_base_seconds: float = 5.0
    backoff_max_seconds: float = 3600.0
    # A claimed delivery not settled this long (its instance died) is attempted again (at least
    # once); the lease is never shorter than twice the longest endpoint timeout.
    lease_seconds: float = 60.0
    poll_interval: float = 1.0  # longest sleep between looks at the due queue (own publishes wake it)
    concurrency: int = 16  # attempts in flight per instance (and HTTP connections at most)


@dataclass(frozen=True)
class NoticeSettings:
    # Proactive notices (services/notices.py): customer-first calls that tell a customer something
    # is done. Budget: at most max_calls notice calls per customer in any budget_days window; over
    # it a notice goes by SMS (channel auto, an SMS sender configured) or waits until it fits.
    max_calls: int = 2
    budget_days: float = 7.0
    # Notices of one customer due within this many seconds of a pending notice call ride on it
    # (one call plays them in turn).
    batch_seconds: float = 600.0
    # A notice without its own expiry is moot this many days after it could first go out.
    window_days: float = 3.0
    # Kinds a customer consents to unless their `notices` attribute refuses them (comma-separated):
    # what they asked to be told (the result of their case, the end of an outage they reported).
    default_consent: str = "case_result,incident"
    # The case_result notice's text per language ({case} = the case id, {result} = the result).
    case_result_en: str = "This is a message about your case {case}: {result}."
    case_result_zh: str = "关于您的工单{case}：{result}。"
    # What a notice call says after the message, in the message's language (synthesized like it):
    # "press 1" (said again once when nothing is pressed) and "goodbye". '' = Asterisk's stock
    # English sounds (vm-press + digits/1, goodbye).
    press_en: str = "To talk to an agent, press 1."
    press_zh: str = "如需人工服务，请按1。"
    bye_en: str = "Goodbye."
    bye_zh: str = "再见。"
    # Ring the customer this long (seconds) before the attempt counts as not answered.
    ring_seconds: int = 30
    # Kinds whose SMS goes out at once at any hour (comma-separated; '' = none): every other notice
    # SMS waits for the customer's allowed hours like a call. A roaming welcome is only useful on landing.
    urgent_kinds: str = "roaming"
    # How often each instance looks for held notice SMS that are due (seconds).
    sms_poll_interval: float = 1.0
    # The reconcile sweep: every reconcile_interval seconds each instance gives the notices of a
    # call over for longer than reconcile_grace seconds the outcome nobody followed (an instance
    # died between the call's outcome and the notices'), so no notice stays scheduled forever.
    reconcile_interval: float = 30.0
    reconcile_grace: float = 120.0


@dataclass(frozen=True)
class SmsSettings:
    # How an SMS reaches a customer's phone (services/sms.py): "asterisk" (a SIP MESSAGE through
    # Asterisk: AMI MessageSend over PJSIP), "gateway" (the webhook event sms.send to the operator's
    # SMS gateway: an endpoint in webhooks.endpoints_file subscribed to it) or "off" (no SMS: notices
    # only call). Off by default: set it together with the destination (`make run` turns it on).
    transport: str = "off"
    # MessageSend's Destination; {number} is replaced by the customer's number (digits, optional +).
    # The host:port is the customers trunk's (its aor contact in pjsip.conf); this default is the
    # local stack's.
    destination: str = "pjsip:customers/sip:{number}@127.0.0.1:5090"
    # The sender (From user) of the SMS ('' = asterisk.hotline).
    sender: str = ""
    # How long an SMS key is remembered (a second send with the same key sends nothing), in days.
    kept_days: int = 30


@dataclass(frozen=True)
class ReminderSettings:
    # Reminders from data (services/reminders.py): rules in reminders.yaml (validated at start).
    enabled: bool = True
    rules_file: str = str(PACKAGE_DIR / "defaults" / "reminders.yaml")
    # Seconds between two walks over every customer (a saved customer is looked at sooner).
    interval: float = 3600.0
    # Customers read per page of the walk, and the pause between two pages (seconds). A page is read
    # in one go (profiles parsed: ~2-3 ms of the event loop per 100 customers, bench/reminders_bench.py),
    # then checked yielding every 20 customers: calls on the same instance wait about that long.
    page_size: int = 100
    page_pause: float = 0.05
    # How long a posted event's id is remembered (the same id never fires twice), in days.
    kept_days: int = 90
    # An attribute reminder is scheduled once it is due within this many days (its notice and
    # synthesized message are made close to the time; a renewal before that cancels nothing).
    horizon_days: float = 2.0


@dataclass(frozen=True)
class WallboardSettings:
    # Service level on the wallboard: a queue call counts as answered in time when an agent
    # answered it within this many seconds of joining the queue (its HoldTime, whole seconds, <= N).
    # Must equal reports.service_level_seconds (checked at load): one service level on both pages.
    service_level_seconds: int = 20
    # The service level a queue should reach (a share, 0..1): below it the board shows it in red.
    service_level_target: float = 0.8
    # Time zone whose midnight starts a new day for the board's "today" counters (IANA name).
    # Must equal reports.timezone (checked at load): the board's today is the reports' day.
    timezone: str = "UTC"
    # Queues shown first, in this order, comma-separated (ivrserver names: vip,general); '' = every
    # queue of queues.conf. With a list, only those queues are shown.
    queues: str = ""
    # How often each instance re-reads callbacks waiting and active incidents (the page never polls).
    refresh_interval: float = 2.0
    # Frames waiting for one slow wallboard socket at most; past it the socket is dropped (it reconnects).
    socket_queue: int = 512


@dataclass(frozen=True)
class ReportSettings:
    # Supervisors' reports (issue 20 §2; services/reports.py, /reports, /api/v1/reports/<name>), read
    # from the hourly rollups of the system of record (migration 0008; postgres.dsn needed).
    # The self-service share is drawn against this target (operators' figure: 78% of needs).
    self_service_target: float = 0.78
    # Time zone whose midnight starts a report day, and of the hour-of-day charts (IANA name);
    # must equal wallboard.timezone (checked at load).
    timezone: str = "UTC"
    # Service level: answered within this many seconds (waited at most N whole seconds) ÷ (answered
    # + abandoned); one of the wait bins' edges (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300,
    # 600, 900, 1800); must equal wallboard.service_level_seconds (checked at load).
    service_level_seconds: int = 20
    # The suggested option order's policy (as `menus stats --policy`): third-fourth-first or busiest-first.
    ordering_policy: str = "third-fourth-first"
    # How often the record upkeep recomputes the hours marked dirty (the reports lag at most this).
    roll_interval: float = 300.0
    # The longest range one report request may cover, in days.
    max_days: int = 400


@dataclass(frozen=True)
class IncidentSettings:
    # Mass-fault detection (issue 19): complaints per (service, area) become incidents, announced
    # to matching callers. The policy file (incidents.yaml: window, minimum count, ratio over the
    # baseline, cool-down, services, area names) is validated at start (files/incident_policy.py).
    enabled: bool = True
    policy_file: str = str(PACKAGE_DIR / "defaults" / "incidents.yaml")


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"
    format: str = "text"  # "text" or "json"


@dataclass(frozen=True)
class Settings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    ami: AmiSettings = field(default_factory=AmiSettings)
    agi: AgiSettings = field(default_factory=AgiSettings)
    web: WebSettings = field(default_factory=WebSettings)
    asterisk: AsteriskSettings = field(default_factory=AsteriskSettings)
    menus: MenuSettings = field(default_factory=MenuSettings)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    cases: CaseSettings = field(default_factory=CaseSettings)
    callbacks: CallbackSettings = field(default_factory=CallbackSettings)
    phone: PhoneSettings = field(default_factory=PhoneSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    log: LogSettings = field(default_factory=LogSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    wallboard: WallboardSettings = field(default_factory=WallboardSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    sms: SmsSettings = field(default_factory=SmsSettings)
    reminders: ReminderSettings = field(default_factory=ReminderSettings)
    notices: NoticeSettings = field(default_factory=NoticeSettings)
    reports: ReportSettings = field(default_factory=ReportSettings)
    instance: str = "ivrserver"
    # uvloop (libuv) or the standard library's loop; both run the same code.
    event_loop: str = "uvloop"

    @property
    def redis_keep_days(self) -> int:
        """How long Redis keeps contacts, timelines and IVR paths (and trims the audit stream to):
        `redis.hot_days` when they go to PostgreSQL (`postgres.dsn`), else `redis.retention_days`."""
        return self.redis.hot_days if self.postgres.dsn else self.redis.retention_days


_CHOICES: dict[str, tuple[str, ...]] = {
    "log.level": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "log.format": ("text", "json"),
    "event_loop": ("uvloop", "asyncio"),
    "sms.transport": ("asterisk", "gateway", "off"),
    "web.default_language": ("auto", "en", "zh"),
}
_PORTS = {"ami.port", "agi.port", "web.port"}


def describe() -> list[tuple[str, str, Any]]:
    """Every configuration key as (dotted key, type name, default), for docs and `ivrserver config`."""
    rows: list[tuple[str, str, Any]] = []
    for section in dataclasses.fields(Settings):
        hints = typing.get_type_hints(Settings)
        kind = hints[section.name]
        if dataclasses.is_dataclass(kind):
            sub_hints = typing.get_type_hints(kind)
            default = kind()
            for f in dataclasses.fields(kind):
                rows.append((f"{section.name}.{f.name}", _type_name(sub_hints[f.name]),
                             getattr(default, f.name)))
        else:
            rows.append((section.name, _type_name(kind), section.default))
    return rows


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, raw: Any, tp: Any, errors: list[str], from_env: bool) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw is None or (from_env and raw == ""):
            return None
        tp = args[0]
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if from_env and isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return raw.lower() in ("1", "true", "yes", "on")
        errors.append(f"{key}: expected true or false, got {raw!r}")
        return None
    if tp is int:
        if isinstance(raw, bool):
            errors.append(f"{key}: expected a whole number, got {raw!r}")
            return None
        if isinstance(raw, int):
            return raw
        if from_env and isinstance(raw, str):
            try:
                return int(raw)
            except ValueError:
                pass
        errors.append(f"{key}: expected a whole number, got {raw!r}")
        return None
    if tp is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if from_env and isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                pass
        errors.append(f"{key}: expected a number, got {raw!r}")
        return None
    if tp is str:
        if isinstance(raw, (str, int)) and not isinstance(raw, bool):
            return str(raw)
        errors.append(f"{key}: expected text, got {raw!r}")
        return None
    errors.append(f"{key}: unsupported setting type {tp!r}")
    return None


def parse_sentinels(text: str) -> list[tuple[str, int]]:
    """`"host:port,host:port"` → [(host, port), …]; ValueError names the bad entry."""
    out: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"expected host:port, got {item!r}")
        out.append((host.strip("[]"), int(port)))
    return out


# Numeric settings with a closed range: key → (low, high, unit shown in the error).
_RANGES: dict[str, tuple[int, int, str]] = {
    "redis.snapshot_timeout": (0, 10, " seconds"),  # and > 0, as every *_timeout
    "redis.history_write_delay": (0, 60, " seconds"),
    "redis.replica_wait_ms": (0, 10_000, " milliseconds"),
    "web.max_connections": (1, 1_000_000, ""),
    "prompts.concurrency": (1, 32, ""),
    "postgres.write_interval": (0, 10, " seconds"),
    "postgres.drain_timeout": (0, 300, " seconds"),
    "wallboard.service_level_seconds": (1, 3600, " seconds"),
    "wallboard.socket_queue": (16, 100_000, ""),
    "wallboard.service_level_target": (0, 1, ""),
    "cases.followup_max_attempts": (1, 1000, ""),
    "cases.followup_max_age_seconds": (1, 30 * 86_400, " seconds"),
    "webhooks.timeout_seconds": (0, 300, " seconds"),
    "webhooks.max_attempts": (1, 100, ""),
    "webhooks.backoff_base_seconds": (0, 86_400, " seconds"),
    "webhooks.backoff_max_seconds": (0, 7 * 86_400, " seconds"),
    "webhooks.concurrency": (1, 1000, ""),
    "sms.kept_days": (1, 3650, " days"),
    "reminders.interval": (1, 7 * 86_400, " seconds"),
    "reminders.page_size": (1, 10_000, ""),
    "reminders.page_pause": (0, 60, " seconds"),
    "reminders.kept_days": (1, 3650, " days"),
    "reminders.horizon_days": (0, 400, " days"),
    "callbacks.observe_interval": (0.05, 60, " seconds"),
    "callbacks.observe_margin": (0, 300, " seconds"),
    "notices.max_calls": (0, 100, ""),
    "notices.budget_days": (0, 90, " days"),
    "notices.batch_seconds": (0, 86_400, " seconds"),
    "notices.window_days": (0, 90, " days"),
    "notices.ring_seconds": (5, 300, " seconds"),
    "notices.sms_poll_interval": (0.05, 60, " seconds"),
    "notices.reconcile_interval": (1, 3600, " seconds"),
    "notices.reconcile_grace": (10, 86_400, " seconds"),
    "reports.self_service_target": (0, 1, ""),
    "reports.roll_interval": (1, 86_400, " seconds"),
    "reports.max_days": (1, 3660, " days"),
}
# Settings checked by a domain/service function that raises ValueError: key → (module, function).
# Imported only when that key is set, so config stays cheap to import.
_CHECKERS: dict[str, tuple[str, str]] = {
    "phone.default_region": ("ivrserver.domain.phone", "check_region"),
    "callbacks.calendar_country": ("ivrserver.services.work_calendar", "check_country"),
    "prompts.synthesizer": ("ivrserver.services.speech", "check_synthesizer"),
    "prompts.convert": ("ivrserver.services.speech", "check_convert"),
    "prompts.voices": ("ivrserver.services.speech", "check_voices"),
    "wallboard.timezone": ("ivrserver.domain.wallboard", "check_timezone"),
    "reports.timezone": ("ivrserver.domain.wallboard", "check_timezone"),
    "reports.service_level_seconds": ("ivrserver.domain.reports", "check_service_level"),
    "reports.ordering_policy": ("ivrserver.domain.reports", "check_policy"),
    **{f"notices.{what}_{lang}": ("ivrserver.domain.notices", "check_call_text")
       for what in ("press", "bye") for lang in ("en", "zh")},
}


def _check_text(key: str, value: str) -> str | None:
    """The problem with a text setting's value, or None."""
    if key in ("callbacks.calling_from", "callbacks.calling_until"):
        parts = value.split(":")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or not (
                0 <= int(parts[0]) <= 24 and 0 <= int(parts[1]) < 60):
            return f"expected HH:MM, got {value!r}"
    elif key == "security.pepper" and value and len(value) < 32:
        return "must be at least 32 characters (e.g. `openssl rand -hex 32`)"
    elif key == "redis.sentinels" and value:
        try:
            parse_sentinels(value)
        except ValueError as exc:
            return str(exc)
    elif key == "postgres.dsn" and value and not value.startswith(("postgresql://", "postgres://")):
        return f"expected a postgresql:// URL, got {value!r}"
    elif key == "redis.url" and not value.startswith(("redis://", "rediss://", "unix://")):
        return f"expected a redis://, rediss:// or unix:// URL, got {value!r}"
    elif key == "sms.destination" and not (value.startswith("pjsip:") and value.count("{number}") == 1
                                           and value.isprintable() and " " not in value):
        return f"expected pjsip:…{{number}}… (e.g. pjsip:customers/sip:{{number}}@host:5060), got {value!r}"
    elif key == "sms.sender" and value and not (len(value) <= 32 and all(c in "0123456789+" for c in value)):
        return f"expected digits (and +), at most 32, got {value!r}"
    elif key == "asterisk.hotline" and not (0 < len(value) <= 32 and all(c in "0123456789+*#" for c in value)):
        # shown as the caller id of callbacks (`Callback <hotline>`): a plain number only
        return f"expected digits (and + * #), 1-32 of them, got {value!r}"
    return None


def _check_number(key: str, value: float) -> str | None:
    """The problem with a numeric setting's value, or None."""
    if key in _PORTS and not (1 <= value <= 65535):
        return f"port must be 1..65535, got {value}"
    if key.endswith(("_timeout", "_interval", "_seconds", "heartbeat")) and value <= 0 \
            and key != "postgres.write_interval":  # 0 there means: write each entry as it arrives
        return f"must be greater than 0, got {value}"
    if key.startswith(("postgres.", "redis.")) and key.endswith(("_days", "pool_size")) and value < 1:
        return f"must be at least 1, got {value}"
    if key in _RANGES:
        low, high, unit = _RANGES[key]
        if not (low <= value <= high):
            return f"must be {low}..{high}{unit}, got {value}"
    return None


def _check(key: str, value: Any, errors: list[str]) -> None:
    if key in _CHOICES and value not in _CHOICES[key]:
        errors.append(f"{key}: must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        problem = _check_number(key, value)
    elif isinstance(value, str):
        problem = _check_text(key, value)
    else:
        problem = None
    if problem:
        errors.append(f"{key}: {problem}")
    if key in _CHECKERS and (value or key != "callbacks.calendar_country"):  # "" there: no calendar
        _check_with(key, value, errors, *_CHECKERS[key])
    if key == "security.trusted_proxies":
        _check_networks(key, value, errors)


def _check_with(key: str, value: Any, errors: list[str], module: str, name: str) -> None:
    """Run a checker that raises ValueError (imported here: config stays cheap to import)."""
    import importlib
    try:
        getattr(importlib.import_module(module), name)(value)
    except ValueError as exc:
        errors.append(f"{key}: {exc}")


# Settings of two sections that name one thing and so must be equal (a config error otherwise):
# the wallboard's "today" and the reports count the same service level over the same days.
_AGREE = (("wallboard.service_level_seconds", "reports.service_level_seconds"),
          ("wallboard.timezone", "reports.timezone"))


def _check_agreement(sections: Mapping[str, Any], errors: list[str]) -> None:
    for one, other in _AGREE:
        (s1, k1), (s2, k2) = one.split("."), other.split(".")
        if s1 not in sections or s2 not in sections:
            continue
        a, b = getattr(sections[s1], k1), getattr(sections[s2], k2)
        if a != b:
            errors.append(f"{one} ({a!r}) and {other} ({b!r}) must be equal: the wallboard and the reports "
                          f"show one service level over the same days; set both to the same value")


def _shown(text: str) -> str:
    """A name from the environment as it may be printed: no control characters reach a terminal."""
    return text if text.isascii() and text.isprintable() else ascii(text)[1:-1]


def _hint(word: object, choices: Iterable[str]) -> str:
    """'did you mean 'x'?' for a near miss, else the allowed names (every list here is short)."""
    return did_you_mean(word, choices, list_up_to=1000)


def _check_networks(key: str, value: str, errors: list[str]) -> None:
    import ipaddress

    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            errors.append(f"{key}: {item[:60]!r} is not an address or network (e.g. 10.0.0.5 or 10.0.0.0/24)")


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The settings named by IVRSERVER_* variables, and an error for each misspelt setting name.

    `IVRSERVER_<SECTION>__<KEY>` sets section.key; `IVRSERVER_<NAME>` without `__` sets a
    top-level single value (instance, event_loop) and is otherwise someone else's variable
    (IVRSERVER_CONFIG, IVRSERVER_TOKEN of `menus reload`, the tests' IVRSERVER_KEEP_ASTERISK):
    ignored. A name with `__` is meant as a setting, so an unknown section or key is an error.
    """
    hints = typing.get_type_hints(Settings)
    sections = {f.name: hints[f.name] for f in dataclasses.fields(Settings)}
    out: dict[str, Any] = {}
    errors: list[str] = []
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section, sep, key = rest.partition("__")
        if not sep:
            if rest in sections and not dataclasses.is_dataclass(sections[rest]):
                out[rest] = value
            continue
        kind = sections.get(section)
        if kind is None:
            errors.append(f"{_shown(name)}: unknown section '{_shown(section)}'; {_hint(section, sections)}")
        elif not dataclasses.is_dataclass(kind):
            errors.append(f"{_shown(name)}: {section} is a single setting, not a section; "
                          f"set {ENV_PREFIX}{section.upper()}")
        elif key not in (keys := [f.name for f in dataclasses.fields(kind)]):
            errors.append(f"{_shown(name)}: unknown key '{_shown(key)}' of section '{section}'; {_hint(key, keys)}")
        else:
            out.setdefault(section, {})[key] = value
    return out, errors


class YamlFileError(ValueError):
    """A YAML file that is not a mapping: the message says why (cannot read, not valid YAML, expected …)."""


def read_yaml_mapping(path: str | os.PathLike[str], expected: str) -> dict[str, Any]:
    """The mapping in the YAML file at `path` (an empty file: {}); YamlFileError if it cannot be read,
    is not YAML, or holds something else than a mapping (`expected` describes the mapping wanted)."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise YamlFileError(f"cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise YamlFileError(f"not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise YamlFileError(f"expected {expected}")
    return loaded


def load(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings from `path` (or $IVRSERVER_CONFIG, or defaults) and the environment."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    if path:
        try:
            data = read_yaml_mapping(path, "a mapping of sections at the top level")
        except YamlFileError as exc:
            raise ConfigError([f"{path}: {exc}"]) from exc
    env, errors = _env_overrides(environ)
    return _build(data, env, errors)


def from_mapping(data: Mapping[str, Any], env: Mapping[str, Any] | None = None) -> Settings:
    """Build validated Settings from a file mapping plus env-style (string) overrides."""
    return _build(data, env or {}, [])


def _build(data: Mapping[str, Any], env: Mapping[str, Any], errors: list[str]) -> Settings:
    """Settings from file data and env overrides; raises ConfigError with `errors` plus its own."""
    hints = typing.get_type_hints(Settings)
    kwargs: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(Settings)}
    for name in list(data) + list(env):
        if name not in known:
            errors.append(f"{name}: unknown section; {_hint(name, known)}")
    for section in dataclasses.fields(Settings):
        kind = hints[section.name]
        if not dataclasses.is_dataclass(kind):
            for raw, from_env in ((data.get(section.name), False), (env.get(section.name), True)):
                if raw is not None:
                    value = _coerce(section.name, raw, kind, errors, from_env)
                    if value is not None:
                        _check(section.name, value, errors)
                        kwargs[section.name] = value
            continue
        sub_hints = typing.get_type_hints(kind)
        sub_known = {f.name for f in dataclasses.fields(kind)}
        values: dict[str, Any] = {}
        for source, from_env in ((data.get(section.name), False), (env.get(section.name), True)):
            if source is None:
                continue
            if not isinstance(source, dict):
                errors.append(f"{section.name}: expected a mapping of keys, got {source!r}")
                continue
            for key, raw in source.items():
                dotted = f"{section.name}.{key}"
                if key not in sub_known:
                    errors.append(f"{dotted}: unknown key; {_hint(key, sub_known)}")
                    continue
                value = _coerce(dotted, raw, sub_hints[key], errors, from_env)
                if value is not None:
                    _check(dotted, value, errors)
                    values[key] = value
        kwargs[section.name] = kind(**values)
    _check_agreement(kwargs, errors)
    if errors:
        raise ConfigError(errors)
    return Settings(**kwargs)
