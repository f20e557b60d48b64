"""`ivrserver doctor`: check what newcomers get wrong, and say how to fix each thing."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis

from ivrserver import config
from ivrserver.commands import load_settings
from ivrserver.domain import hashing
from ivrserver.files import case_policy, incident_policy
from ivrserver.files import menus as menu_files
from ivrserver.files import reminders as reminder_files
from ivrserver.files import routing as routing_files
from ivrserver.files import webhooks as webhook_files
from ivrserver.pbx.asterisk_conf import ConfReadError, keypress_log_channels, queue_names, read_conf
from ivrserver.services import pepper as pepper_source
from ivrserver.services import record_schema
from ivrserver.services.menus import MenuRegistry

# What ivrserver does over AMI, and the manager.conf class each needs.
NEEDED_READ = {"call": "channel, dial and originate events", "agent": "queue member events",
               "user": "UserEvent", "system": "FullyBooted at login"}
NEEDED_WRITE = {"originate": "placing callbacks", "call": "hang-up and redirect", "agent": "pausing queue members"}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False   # ok (does not fail the exit status) but something to fix before production


async def _check_redis(settings: config.Settings) -> Check:
    client = aioredis.Redis.from_url(settings.redis.url, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
        return Check("redis", True, f"{settings.redis.url} answers PING")
    except Exception as exc:
        return Check("redis", False, f"{settings.redis.url}: {exc}",
                     "start redis-server, or set redis.url / IVRSERVER_REDIS__URL to where it runs")
    finally:
        await client.aclose()


async def _ami_login(settings: config.Settings) -> Check:
    ami = settings.ami
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ami.host, ami.port), 3)
    except (OSError, TimeoutError) as exc:
        return Check("ami.login", False, f"cannot connect to AMI at {ami.host}:{ami.port}: {exc}",
                     "enable AMI in manager.conf ([general] enabled = yes, port, bindaddr) "
                     "and set ami.host / ami.port")
    try:
        banner = await asyncio.wait_for(reader.readline(), 3)
        if not banner.startswith(b"Asterisk Call Manager"):
            return Check("ami.login", False, f"{ami.host}:{ami.port} is not an AMI port (banner {banner[:40]!r})",
                         "point ami.port at Asterisk's manager port (5038 by default)")
        writer.write(f"Action: Login\r\nUsername: {ami.username}\r\nSecret: {ami.secret}\r\n"
                     f"Events: off\r\nActionID: doctor\r\n\r\n".encode())
        await writer.drain()
        reply = b""
        while not reply.endswith(b"\r\n\r\n"):
            chunk = await asyncio.wait_for(reader.read(1024), 3)
            if not chunk:
                break
            reply += chunk
        if b"Response: Success" in reply:
            return Check("ami.login", True, f"logged in as {ami.username} at {ami.host}:{ami.port}")
        return Check("ami.login", False, f"login as {ami.username} refused",
                     f"add a [{ami.username}] user with this secret to manager.conf, then `manager reload`")
    except (OSError, TimeoutError) as exc:
        return Check("ami.login", False, f"AMI did not answer: {exc}", "check Asterisk is running")
    finally:
        writer.close()


def _classes(value: str) -> set[str]:
    return {part.strip() for part in value.split(",") if part.strip()}


def needed_write(settings: config.Settings) -> dict[str, str]:
    """The AMI write classes ivrserver needs with these settings (SMS through Asterisk: `message`)."""
    if settings.sms.transport == "asterisk":
        return {**NEEDED_WRITE, "message": "sending SMS (sms.transport asterisk: MessageSend)"}
    return NEEDED_WRITE


def _check_ami_permissions(settings: config.Settings, conf_dir: Path) -> list[Check]:
    try:
        sections = {s.name: s for s in read_conf(conf_dir / "manager.conf")}
    except ConfReadError as exc:
        return [Check("ami.permissions", False, str(exc), f"set asterisk.config_dir to Asterisk's config directory "
                      f"(now {conf_dir})")]
    user = sections.get(settings.ami.username)
    if user is None:
        return [Check("ami.permissions", False, f"no [{settings.ami.username}] user in manager.conf",
                      f"add [{settings.ami.username}] with secret, read and write (see README)")]
    checks = []
    for kind, needed in (("read", NEEDED_READ), ("write", needed_write(settings))):
        have = _classes(",".join(user.get_all(kind)))
        missing = [c for c in needed if c not in have and "all" not in have]
        if missing:
            why = "; ".join(f"{c}: {needed[c]}" for c in missing)
            checks.append(Check(f"ami.{kind}", False, f"{kind} = {','.join(sorted(have)) or '(none)'} lacks {why}",
                                f"add {','.join(missing)} to `{kind} =` of [{settings.ami.username}]"))
        else:
            checks.append(Check(f"ami.{kind}", True, f"{kind} permissions cover {', '.join(needed)}"))
    return checks


def _check_dialplan(settings: config.Settings, conf_dir: Path) -> list[Check]:
    path = conf_dir / "extensions.conf"
    if not path.is_file():
        return [Check("dialplan", False, f"{path}: no such file", "set asterisk.config_dir")]
    text = path.read_text(encoding="utf-8", errors="replace")
    checks = []
    if not re.search(r"^\s*#include\s+\"?[^\n]*ivrserver\.conf", text, re.M):
        checks.append(Check("dialplan.include", False, "extensions.conf does not #include ivrserver.conf",
                            "copy dialplans/ivrserver.conf next to extensions.conf and add "
                            "`#include ivrserver.conf`"))
    else:
        checks.append(Check("dialplan.include", True, "extensions.conf includes ivrserver.conf"))
    match = re.search(r"^\s*IVRSERVER_AGI\s*=>?\s*(\S+)", text, re.M)
    want = f"{settings.agi.host}:{settings.agi.port}"
    if match is None:
        checks.append(Check("dialplan.agi", False, "no IVRSERVER_AGI in [globals] of extensions.conf",
                            f"add `IVRSERVER_AGI={want}` under [globals]"))
    elif match.group(1) != want:
        checks.append(Check("dialplan.agi", False, f"Asterisk will call FastAGI at {match.group(1)}, "
                            f"ivrserver listens on {want}",
                            f"set IVRSERVER_AGI={want} in [globals], or agi.host/agi.port to match"))
    else:
        checks.append(Check("dialplan.agi", True, f"Asterisk calls FastAGI at {want}"))
    return checks


def _check_queues(conf_dir: Path) -> list[Check]:
    try:
        defined = queue_names(conf_dir / "queues.conf")
    except ConfReadError as exc:
        return [Check("queues", False, str(exc), "set asterisk.config_dir")]
    if "general" not in defined:
        return [Check("queues", False, "no [ivr-general] queue in queues.conf: the dialplan's fallback has nowhere "
                      "to send callers", "add [ivr-general] with your agents as members (see asterisk-config/)")]
    return [Check("queues", True, f"queues.conf defines {', '.join(sorted(defined))}")]


def _check_menus(settings: config.Settings, conf_dir: Path) -> Check:
    """The menus load and validate against Asterisk's real queues and sounds."""
    sounds = Path(settings.asterisk.sounds_dir)
    queues_conf = conf_dir / "queues.conf"
    resources, notes = menu_files.resources(str(sounds) if sounds.is_dir() else None,
                                            str(queues_conf) if queues_conf.is_file() else None)
    result = MenuRegistry(settings.menus.dir, resources=resources).reload()
    if not result.ok:
        shown = [str(e) for e in result.errors[:5]]
        more = f" (+{len(result.errors) - 5} more)" if len(result.errors) > 5 else ""
        return Check("menus", False, "; ".join(shown) + more, f"run `ivrserver menus check {settings.menus.dir}`")
    detail = f"{settings.menus.dir}: version {result.version} valid"
    return Check("menus", True, detail + (f" ({'; '.join(notes)})" if notes else ""))


def _check_routing(settings: config.Settings, conf_dir: Path) -> Check:
    try:
        queues: set[str] | None = queue_names(conf_dir / "queues.conf")
    except ConfReadError:
        queues = None
    problems = routing_files.check(settings.routing, queues=queues) if queues else routing_files.check(
        settings.routing)
    if problems:
        return Check("routing", False, "; ".join(problems[:5]),
                     f"fix {settings.routing.policy_file} / {settings.routing.agents_file}")
    return Check("routing", True, "routing policy and agents valid; every queue they name exists")


def _check_cases(settings: config.Settings) -> Check:
    """cases.yaml as the server reads it at start (it does not start with an invalid one)."""
    problems = case_policy.check(settings.cases.policy_file)
    if problems:
        return Check("cases", False, "; ".join(problems[:5]), f"fix {settings.cases.policy_file}")
    return Check("cases", True, f"{settings.cases.policy_file}: case policy valid")


def _check_incidents(settings: config.Settings) -> Check | None:
    """incidents.yaml as the server reads it at start; None when mass-fault detection is off."""
    if not settings.incidents.enabled:
        return None
    problems = incident_policy.check(settings.incidents.policy_file, routing_files.KNOWN_QUEUES)
    if problems:
        return Check("incidents", False, "; ".join(problems[:5]), f"fix {settings.incidents.policy_file}")
    return Check("incidents", True, f"{settings.incidents.policy_file}: incident policy valid")


def _check_reminders(settings: config.Settings) -> Check | None:
    """reminders.yaml as the server reads it at start; None when reminders are off."""
    if not settings.reminders.enabled:
        return None
    problems = reminder_files.check(settings.reminders.rules_file)
    if problems:
        return Check("reminders", False, "; ".join(problems[:5]), f"fix {settings.reminders.rules_file}")
    return Check("reminders", True, f"{settings.reminders.rules_file}: reminder rules valid")


def _check_webhooks(settings: config.Settings) -> Check | None:
    """webhooks.yaml as the server reads it at start (secrets from this environment); None without one."""
    path = settings.webhooks.endpoints_file
    if not path:
        return None
    try:
        loaded = webhook_files.load(settings.webhooks)
    except webhook_files.WebhookFileError as exc:
        return Check("webhooks", False, "; ".join(exc.problems[:5]), f"fix {path} (the server does not start with it)")
    if loaded.warnings:
        return Check("webhooks", True, "; ".join(loaded.warnings[:5]), f"see {path}", warning=True)
    names = ", ".join(e.name for e in loaded.endpoints) or "none"
    return Check("webhooks", True, f"{len(loaded.endpoints)} endpoint(s): {names}")


async def _check_redis_persistence(settings: config.Settings) -> Check | None:
    """Warn when the Redis in use keeps nothing on disk (AOF and RDB snapshots both off).

    None when Redis does not answer (the `redis` check already says so). A Redis whose CONFIG
    command is renamed, disabled or denied by an ACL cannot tell: that is a warning too.
    """
    client = aioredis.Redis.from_url(settings.redis.url, socket_connect_timeout=2, socket_timeout=2,
                                     decode_responses=True)
    try:
        found = {**await client.config_get("appendonly"), **await client.config_get("save"),
                 **await client.config_get("appendfsync")}
    except aioredis.ResponseError as exc:
        return Check("redis.persistence", True, f"cannot tell whether Redis keeps data on disk "
                     f"(CONFIG GET refused: {str(exc)[:80]})",
                     "make sure redis.conf sets `appendonly yes` and `appendfsync everysec`", warning=True)
    except Exception:
        return None
    finally:
        await client.aclose()
    aof = found.get("appendonly", "").lower() == "yes"
    save = found.get("save", "").strip()
    if aof:
        return Check("redis.persistence", True,
                     f"AOF on (appendfsync {found.get('appendfsync', '?')}){f', RDB save {save}' if save else ''}")
    if save:
        return Check("redis.persistence", True, f"RDB snapshots only (save {save}): a crash loses the writes "
                     "since the last snapshot; AOF (`appendonly yes`, `appendfsync everysec`) loses at most 1 s")
    return Check("redis.persistence", True, "Redis keeps nothing on disk (appendonly no, save \"\"): a restart "
                 "wipes every customer, case, callback and contact record",
                 "set `appendonly yes` and `appendfsync everysec` in redis.conf (or CONFIG SET appendonly yes "
                 "then CONFIG REWRITE)", warning=True)


def _check_asterisk_logger(conf_dir: Path) -> Check:
    """Warn when the user's own Asterisk writes keypresses (account numbers, PINs) to a log."""
    path = conf_dir / "logger.conf"
    try:
        channels = keypress_log_channels(path)
    except ConfReadError as exc:
        return Check("asterisk.logger", True, f"logger.conf not checked: {exc}",
                     "set asterisk.config_dir to Asterisk's config directory", warning=True)
    if channels:
        return Check("asterisk.logger", True, f"{path} logs DTMF to {', '.join(channels)}: every account "
                     "number and PIN a caller keys in is written there",
                     "remove `dtmf` (and `*`) from those channels in logger.conf, then `logger reload`",
                     warning=True)
    return Check("asterisk.logger", True, f"{path}: no log channel records DTMF")


def _check_agi_port(settings: config.Settings) -> Check:
    with socket.socket() as s:
        try:
            s.bind((settings.agi.host, settings.agi.port))
        except OSError:
            return Check("fastagi.port", True, f"{settings.agi.host}:{settings.agi.port} is in use "
                         "(fine if ivrserver is running)")
    return Check("fastagi.port", True, f"{settings.agi.host}:{settings.agi.port} is free for ivrserver")


# --- defaults still in place before production (warnings; each its own check) ------------------

DEFAULT_AMI_SECRET = config.AmiSettings().secret
_ANY_ADDRESS = frozenset({"0.0.0.0", "::", "", "*", "[::]"})


def _check_ami_secret(settings: config.Settings) -> Check:
    if settings.ami.secret == DEFAULT_AMI_SECRET:
        return Check("security.ami_secret", True, f"ami.secret is still the default {DEFAULT_AMI_SECRET!r}: anyone "
                     "who reaches the manager port can originate calls", "set a long random secret in manager.conf "
                     "and ami.secret (or IVRSERVER_AMI__SECRET)", warning=True)
    return Check("security.ami_secret", True, "ami.secret is not the default")


def _demo_password(agent_id: str, stored: str) -> bool:
    """The demo scheme of scripts/demo-agents.yaml: the password is the agent's id."""
    return hashing.verify(agent_id, stored)


def _check_agent_passwords(settings: config.Settings) -> Check:
    """Agents whose password is a demo one, or whose hash is below the current cost (blocking:
    runs in a worker thread; one hash check per agent and guess)."""
    try:
        agents = routing_files.load_agents(settings.routing.agents_file)
    except routing_files.RoutingFileError as exc:
        return Check("security.agent_passwords", True, f"agents not checked: {exc.problems[0]}", warning=True)
    demo = sorted(a for a, h in agents.credentials.items() if _demo_password(a, h))
    weak = sorted(a for a, h in agents.credentials.items()
                  if a not in demo and hashing.needs_rehash(h, cost=hashing.PASSWORD_COST))
    problems = []
    if demo:
        problems.append(f"{len(demo)} agent(s) with a demo password ({', '.join(demo[:5])}"
                        f"{', ...' if len(demo) > 5 else ''})")
    if weak:
        problems.append(f"{len(weak)} password hash(es) below the current cost ({', '.join(weak[:5])}; "
                        "replaced at each agent's next login when the file is writable)")
    if problems:
        return Check("security.agent_passwords", True, "; ".join(problems) + f" in {settings.routing.agents_file}",
                     "give each agent their own password: scripts/hash-password, then password_hash in the "
                     "agents file", warning=True)
    return Check("security.agent_passwords", True,
                 f"{len(agents.credentials)} agent password(s), none a demo one, all at the current cost")


def _check_pepper(settings: config.Settings) -> Check:
    """PIN hashes need a pepper of the operator's own (reads, maybe creates, a file: run in a thread)."""
    try:
        source = pepper_source.load(settings.security)
    except pepper_source.PepperError as exc:
        return Check("security.pepper", False, str(exc), "create it: openssl rand -hex 32 > FILE; chmod 600 FILE; "
                     "set security.pepper_file")
    if source.development:
        return Check("security.pepper", True, f"PIN hashes are keyed with the development pepper {source.path} "
                     "(generated, not configured)", "openssl rand -hex 32 > /etc/ivrserver/pepper; chmod 600 it; "
                     "set security.pepper_file; keep a backup with the Redis data (customers then keep their "
                     "PINs only if you copy the development pepper there instead)", warning=True)
    detail = f"PIN hashes keyed with the pepper from {source.origin} (id {source.pepper.id})"
    if source.path is not None and Path(source.path).stat().st_mode & 0o077:
        return Check("security.pepper", True, f"{detail}, but {source.path} is readable by group or others",
                     f"chmod 600 {source.path}", warning=True)
    return Check("security.pepper", True, detail)


def _check_bind_addresses(settings: config.Settings) -> list[Check]:
    checks = []
    if settings.agi.host in _ANY_ADDRESS:
        checks.append(Check("security.fastagi_bind", True, f"FastAGI listens on every address "
                            f"({settings.agi.host or '*'}:{settings.agi.port}); FastAGI has no authentication",
                            "set agi.host to the address Asterisk connects to and let only Asterisk's address "
                            "reach the port (firewall)", warning=True))
    else:
        checks.append(Check("security.fastagi_bind", True, f"FastAGI listens on {settings.agi.host} only "
                            "(it has no authentication: only Asterisk's address may reach it)"))
    if settings.web.host in _ANY_ADDRESS:
        checks.append(Check("security.web_bind", True, f"the web server listens on every address "
                            f"({settings.web.host or '*'}:{settings.web.port}) without TLS",
                            "bind web.host to 127.0.0.1 behind a TLS reverse proxy (and list it in "
                            "security.trusted_proxies)", warning=True))
    else:
        checks.append(Check("security.web_bind", True, f"the web server listens on {settings.web.host} only"))
    return checks


async def security_checks(settings: config.Settings) -> list[Check]:
    """The "before production" defaults: AMI secret, agent passwords, pepper, bind addresses."""
    return [_check_ami_secret(settings),
            await asyncio.to_thread(_check_agent_passwords, settings),
            await asyncio.to_thread(_check_pepper, settings),
            *_check_bind_addresses(settings)]


# -- PostgreSQL, the system of record (only when postgres.dsn is set) ---------------------------

def _check_postgres_reachable(h: record_schema.RecordHealth) -> Check:
    if h.error:
        return Check("postgres.reachable", False, f"{h.dsn}: {h.error}",
                     "start PostgreSQL (`make run` starts its own), or set postgres.dsn / IVRSERVER_POSTGRES__DSN "
                     "to a server, database and role that exist")
    return Check("postgres.reachable", True, f"{h.dsn} answers")


def _check_postgres_schema(h: record_schema.RecordHealth) -> Check | None:
    if h.error:
        return None
    if h.version != h.newest:
        return Check("postgres.schema", False, f"schema at version {h.version} of {h.newest}: "
                     f"{h.newest - h.version} migration(s) pending", "ivrserver db migrate")
    return Check("postgres.schema", True, f"schema at the newest version ({h.newest})")


def _check_postgres_rights(h: record_schema.RecordHealth) -> Check | None:
    if h.error or h.version != h.newest:
        return None
    if h.missing_rights:
        return Check("postgres.rights", False, "the role lacks " + ", ".join(h.missing_rights),
                     "GRANT them to the role of postgres.dsn (e.g. GRANT INSERT, UPDATE ON contacts, ivr_paths, "
                     "audit TO <role>; GRANT CREATE ON SCHEMA public TO <role>), or use the schema's owner")
    return Check("postgres.rights", True, "the role can write contacts, paths, audit, customers, cases, "
                 "agents' preferences and create next months' partitions")


def _check_postgres_partitions(h: record_schema.RecordHealth) -> Check | None:
    if h.error or h.version != h.newest:
        return None
    if h.missing_partitions:
        return Check("postgres.partitions", False, "missing partition(s) " + ", ".join(h.missing_partitions)
                     + ": rows land in the default partition, which retention never drops",
                     "ivrserver db migrate (creates this and the next months' partitions); run it monthly")
    return Check("postgres.partitions", True, "this and next month's partitions exist for contacts, "
                 "ivr_paths and audit")


async def postgres_checks(settings: config.Settings) -> list[Check]:
    """Reachable, migrated, the role's rights, partitions; nothing when postgres.dsn is empty."""
    if not settings.postgres.dsn:
        return []
    h = await record_schema.health(settings.postgres, datetime.now(UTC))
    found = [_check_postgres_reachable(h), _check_postgres_schema(h), _check_postgres_rights(h),
             _check_postgres_partitions(h)]
    return [c for c in found if c is not None]


async def diagnose(settings: config.Settings) -> list[Check]:
    conf_dir = Path(settings.asterisk.config_dir)
    checks = [await _check_redis(settings), *await postgres_checks(settings), await _ami_login(settings)]
    # File-reading checks run in a worker thread: the event loop never blocks on disk.
    checks += await asyncio.to_thread(_check_ami_permissions, settings, conf_dir)
    checks += await asyncio.to_thread(_check_dialplan, settings, conf_dir)
    checks += await asyncio.to_thread(_check_queues, conf_dir)
    checks.append(await asyncio.to_thread(_check_menus, settings, conf_dir))
    checks.append(await asyncio.to_thread(_check_routing, settings, conf_dir))
    checks.append(await asyncio.to_thread(_check_cases, settings))
    webhooks = await asyncio.to_thread(_check_webhooks, settings)
    checks += [webhooks] if webhooks is not None else []
    incidents = await asyncio.to_thread(_check_incidents, settings)
    checks += [incidents] if incidents is not None else []
    reminders = await asyncio.to_thread(_check_reminders, settings)
    checks += [reminders] if reminders is not None else []
    checks.append(_check_agi_port(settings))
    persistence = await _check_redis_persistence(settings)
    checks += [persistence] if persistence is not None else []
    checks.append(await asyncio.to_thread(_check_asterisk_logger, conf_dir))
    checks += await security_checks(settings)
    return checks


def run_doctor(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if settings is None:
        return 2
    checks = asyncio.run(diagnose(settings))
    if args.format == "json":
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for c in checks:
            print(f"[{'FAIL' if not c.ok else 'warn' if c.warning else 'ok'}] {c.name}: {c.detail}")
            if (not c.ok or c.warning) and c.fix:
                print(f"       fix: {c.fix}")
    return 0 if all(c.ok for c in checks) else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("doctor", help="check Redis, PostgreSQL, AMI, dialplan and queues; say how to fix each")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run_doctor)
