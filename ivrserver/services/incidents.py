"""Mass-fault incidents, the use cases (issue 19).

- Detection (`run`, under the supervisor on every instance): one instance at a time holds the
  detector lease and looks at the complaint counters of the pairs that had complaints in the last
  window; a pair whose counts pass the policy (domain/incidents.assess) gets an incident, created
  once across instances (the pair's SET NX marker), and the work order goes out as the webhook
  "incident.opened" (key "incident:<id>:opened": sent once however often it is published).
  Every instance also renders the announcements of active incidents (the text in each language
  → clips), so a matching caller never waits for a synthesizer.
- The call path (services/hotline.py): `offer` for a caller matching an active incident (the
  active incidents come with the caller snapshot, no extra round trip), `subscribe` when they
  press 1, `complaint_ops` for the counters written by the end-of-call script (what the caller
  did with the announcement: menu_engine.incident_outcome, the rule the contact record follows).
- Agents: a `fault:<service>` disposition counts as a complaint (`count_disposition`, once per
  contact and service, not again when the IVR counted the call).
- The back office / supervisors (web/api_incidents.py): open by hand (planned outage),
  acknowledge, update (cause, expected fix time), resolve. At resolve every subscriber, every
  caller offered the announcement and every customer who complained about the pair during the
  incident gets one notice (NoticeService, key "incident:<id>:<customer>"), and the figures are
  archived with the incident; notices delivered afterwards are added to them as they are
  (`on_notice_delivered`, the NoticeService's hook).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from ivrserver.domain import areas
from ivrserver.domain import incidents as inc
from ivrserver.domain import menu_engine as e
from ivrserver.domain.model import CallerSnapshot
from ivrserver.services.speech import SpeechRenderer, SynthesisError
from ivrserver.store.incidents import (
    Conflict,
    IncidentStore,
    complaint_ops,
    incident_from_json,
    member,
    split_member,
)
from ivrserver.store.notices import LockBusy

log = logging.getLogger("ivrserver.incidents")
MAX_SAMPLE_CALLERS = 10
# resolve notices scheduled at once: each is ~13 Redis round trips; a few at once hide their latency,
# more gain nothing, the Python work on this loop is the limit (bench/resolve_bench.py, quiet host:
# 10,000 notices in 21.5 s one at a time, 12.5 s four at once, 12.5 s sixteen)
NOTIFY_CONCURRENCY = 4
# an unfinished resolve whose mark is younger than this is left to the instance doing it (which
# renews the mark every quarter of it while its notices go on)
RESOLVE_GRACE_SECONDS = 60
LANGUAGES = ("en", "zh")


class Publisher(Protocol):
    """services/webhooks.Webhooks."""

    async def publish(self, event: str, data: Mapping[str, Any], *, key: str) -> bool: ...


class NoticeScheduler(Protocol):
    """services/notices.NoticeService."""

    async def schedule(self, req: Any) -> Any: ...


class IncidentError(ValueError):
    """A request the incidents refuse (unknown service, bad area, a state that forbids it)."""


class IncidentNotFound(LookupError):
    pass


class NoticesBusy(Exception):
    """Some customers' notices were being changed elsewhere (their lock held past the wait, e.g. by
    an instance that died holding it): the resolve stays unfinished, to be finished again."""


class IncidentConflict(Exception):
    """The pair has an active incident already (`.existing` is its id) or it changed meanwhile."""

    def __init__(self, message: str, existing: str = "") -> None:
        super().__init__(message)
        self.existing = existing


@dataclass(frozen=True)
class ResolveReport:
    """A resolve: the incident, and its notices once they are scheduled (None while they still are:
    the figures are archived when they are done)."""

    incident: inc.Incident
    notices_scheduled: int | None
    notices_refused: int | None

    @property
    def pending(self) -> bool:
        return self.notices_scheduled is None


class IncidentService:
    def __init__(self, store: IncidentStore, policy: inc.Policy, *, speech: SpeechRenderer | None = None,
                 webhooks: Publisher | None = None, notices: NoticeScheduler | None = None, instance: str = "",
                 clock: Callable[[], float] = time.time, notify_concurrency: int = NOTIFY_CONCURRENCY) -> None:
        self.store = store
        self.notify_concurrency = notify_concurrency
        self._following: dict[str, asyncio.Task[ResolveReport]] = {}  # resolves being followed through
        self.policy = policy
        self.speech = speech
        self.webhooks = webhooks
        self.notices = notices
        self.instance = instance or "ivrserver"
        self.clock = clock
        try:
            self.zone = zoneinfo.ZoneInfo(policy.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.zone = zoneinfo.ZoneInfo("UTC")
        # (incident id, revision) → language → prompts of the offer; the thanks per language
        self._offers: dict[tuple[str, int], dict[str, tuple[e.Prompt, ...]]] = {}
        self._stale: set[tuple[str, int]] = set()  # offers rendered under a policy since reloaded
        self._thanks: dict[str, tuple[e.Prompt, ...]] = {}
        self._wake = asyncio.Event()
        self.leader = False

    def use_policy(self, policy: inc.Policy) -> None:
        """Swap in a reloaded incidents.yaml (synchronous: nothing sees half of it). Announcements
        are rendered again (service names may have changed): callers hear the old one until the new
        one is ready. The detector wakes."""
        try:
            zone = zoneinfo.ZoneInfo(policy.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zone = zoneinfo.ZoneInfo("UTC")
        self.policy, self.zone = policy, zone
        self._stale = set(self._offers)
        self._wake.set()

    def attach(self, *, webhooks: Publisher | None = None, notices: NoticeScheduler | None = None) -> None:
        """Services built after this one (the app wires them when they exist)."""
        self.webhooks = webhooks or self.webhooks
        self.notices = notices or self.notices
        if notices is not None and hasattr(notices, "on_delivered"):
            notices.on_delivered = self.on_notice_delivered  # notices delivered, in the figures

    # -- the call path ---------------------------------------------------------------------

    def area_of(self, snapshot: CallerSnapshot) -> areas.Area | None:
        attributes = snapshot.customer.attributes if snapshot.customer else None
        return areas.caller_area(attributes, snapshot.number or None, self.policy.areas)

    def matching(self, snapshot: CallerSnapshot, active: Sequence[str]) -> list[inc.Incident]:
        """Active incidents (raw JSON from the snapshot) for the caller's area and services."""
        if not active:
            return []
        area = self.area_of(snapshot)
        if area is None:
            return []
        services = inc.caller_services(snapshot.customer.attributes if snapshot.customer else None)
        found = [i for i in (incident_from_json(raw) for raw in active) if i is not None]
        return sorted((i for i in found if inc.matches(i, area.key, services)), key=lambda i: i.opened_at)

    def offer(self, snapshot: CallerSnapshot, active: Sequence[str]) -> e.IncidentOffer | None:
        """The announcement for this caller, if an active incident matches them and its clips are
        rendered (not yet: the renderer is woken and the caller hears the normal menu)."""
        for incident in self.matching(snapshot, active):
            prompts = self._offers.get((incident.id, incident.revision))
            if prompts is None or not self._thanks:
                self._wake.set()
                continue
            info = self.policy.services.get(incident.service)
            return e.IncidentOffer(incident.id, prompts, self._thanks, queue=info.queue if info else "faults",
                                   priority=info.priority if info else 0)
        return None

    def complaint_ops(self, now: float, snapshot: CallerSnapshot, path: Sequence[e.PathEvent],
                      customer_id: str | None, contact_id: str | None = None) -> list[list[str]]:
        """The counters the call's end-of-call script writes (nothing for a call that neither
        reported a fault nor was offered an announcement). `contact_id`: the call's contact record
        (its complaints are marked counted; a call sent to a queue is remembered for the figures)."""
        services = [s for s in e.reported_services(path) if s in self.policy.services]
        heard = e.incident_outcome(path)
        if not services and heard is None:
            return []
        area = self.area_of(snapshot) if services else None
        caller = member(customer_id, snapshot.number)
        return self.store_ops(now, services, area.key if area else None, caller, heard, contact_id)

    def store_ops(self, now: float, services: Sequence[str], area: str | None, caller: str,
                  heard: tuple[str, str] | None, contact_id: str | None = None) -> list[list[str]]:
        return complaint_ops(self.store.keys, self.policy, now, services=services, area=area, caller=caller,
                             heard=heard, contact_id=contact_id)

    def fault_services(self) -> tuple[str, ...]:
        """The services a fault can name (incidents.yaml `services`)."""
        return tuple(self.policy.services)

    async def count_disposition(self, contact_id: str, service: str, *, number: str, customer_id: str | None,
                                attributes: Mapping[str, str] | None, started_at: float,
                                now: float | None = None) -> bool:
        """An agent's disposition `fault:<service>` on a contact: one complaint for (service, the
        caller's area), exactly as the IVR's fault report counts it, once per contact and service
        (not when the IVR counted this call's report already). False when not counted: unknown
        service, no area, a contact older than the callers are kept, or counted already."""
        now = self.clock() if now is None else now
        policy = self.policy
        if service not in policy.services or now - started_at > policy.callers_kept_seconds:
            return False
        area = areas.caller_area(attributes, number or None, policy.areas)
        if area is None:
            return False
        kept = str(policy.callers_kept_seconds)
        ops = [["once", self.store.keys.incident_counted(contact_id), service, kept],
               *complaint_ops(self.store.keys, policy, now, services=[service], area=area.key,
                              caller=member(customer_id, number))]
        counted = await self.store.count(ops)
        if counted:
            log.info("fault disposition counted", extra={"service": service, "area": area.key})
        return counted

    async def subscribe(self, incident_id: str, snapshot: CallerSnapshot, customer_id: str | None) -> bool:
        if not snapshot.number and not customer_id:
            return False
        try:
            return await self.store.subscribe(incident_id, member(customer_id, snapshot.number))
        except (RedisError, OSError) as exc:
            log.warning("incident subscription not stored", extra={"incident": incident_id, "error": str(exc)})
            return False

    def pop_entries(self, snapshot: CallerSnapshot, active: Sequence[str]) -> list[dict[str, Any]]:
        """What the agent's pop shows about incidents relevant to the caller."""
        return [pop_entry(i, self.policy) for i in self.matching(snapshot, active)]

    # -- rendering -------------------------------------------------------------------------

    async def _clips(self, texts: Mapping[str, Sequence[str]]) -> dict[str, tuple[e.Prompt, ...]]:
        """Every text in every language at once (a synthesizer process each, at most
        prompts.concurrency): the time to the first announcement is one clip's, not six."""
        speech = self.speech
        assert speech is not None
        semaphore = asyncio.Semaphore(max(1, speech.concurrency))
        langs = [lang for lang in texts if lang in speech.voices]
        rendered = await asyncio.gather(*(asyncio.gather(*(speech.clip(text, lang, semaphore=semaphore)
                                                           for text in texts[lang])) for lang in langs))
        return {lang: tuple(e.Spoken(text, lang, clip.sound) for text, clip in zip(texts[lang], clips, strict=True))
                for lang, clips in zip(langs, rendered, strict=True)}

    async def render_active(self, incidents: Sequence[inc.Incident]) -> None:
        """Render the offers of active incidents not rendered yet; forget the others."""
        if self.speech is None:
            return
        live = {(i.id, i.revision) for i in incidents}
        for stale in set(self._offers) - live:
            del self._offers[stale]
        self._stale &= live
        try:
            if not self._thanks:  # the fixed texts once, before any incident needs them
                await self._clips({lang: [inc.OFFER_TEXT[lang]] for lang in LANGUAGES})
                self._thanks = await self._clips({lang: [inc.SUBSCRIBED_TEXT[lang]] for lang in LANGUAGES})
            for incident in incidents:
                key = (incident.id, incident.revision)
                if key in self._offers and key not in self._stale:
                    continue
                policy = self.policy
                texts = {lang: [inc.announcement_text(incident, policy, lang, self.zone), inc.OFFER_TEXT[lang]]
                         for lang in LANGUAGES}
                self._offers[key] = await self._clips(texts)
                if self.policy is policy:  # else a reload came meanwhile: render it again next round
                    self._stale.discard(key)
                else:
                    self._stale.add(key)
        except (SynthesisError, OSError) as exc:
            log.error("incident announcement not rendered; matching callers hear the normal menu",
                      extra={"error": str(exc)})

    # -- detection -------------------------------------------------------------------------

    async def detect_once(self, now: float | None = None) -> list[inc.Incident]:
        """Look at every pair with recent complaints; open the incidents the policy calls for."""
        now = self.clock() if now is None else now
        pairs = await self.store.recent_pairs(now - self.policy.window_seconds)
        opened = []
        for (service, area), (counts, active, resolved_at) in zip(
                pairs, await self.store.pair_states(pairs, now, self.policy), strict=True):
            if service not in self.policy.services:
                continue
            verdict = inc.assess(counts, self.policy, active=active, resolved_at=resolved_at, now=now)
            if verdict is not inc.Verdict.RAISE:
                continue
            names = self.policy.areas.get(area) or await self._area_names(service, area, now)
            incident = inc.open_incident(service, area, now, opened_by="detector", counts=counts, area_names=names)
            if await self.store.create(incident) is None:
                log.warning("incident opened", extra={"incident": incident.id, "count": counts.window,
                                                      "baseline": counts.baseline})
                await self._work_order(incident)
                opened.append(incident)
        return opened

    async def _area_names(self, service: str, area: str, now: float) -> dict[str, str]:
        """The names of an area, from one of the callers who complained (their number's region)."""
        for raw in await self.store.callers(service, area, now - self.policy.window_seconds, now):
            found = areas.from_number(split_member(raw)[1])
            if found is not None and found.key == area:
                return dict(found.names)
        return {}

    async def _work_order(self, incident: inc.Incident) -> None:
        if self.webhooks is None:
            log.warning("incident %s: no webhooks configured, the work order is not sent", incident.id)
            return
        since = float(incident.counts.get("first_report_at") or incident.opened_at - self.policy.window_seconds)
        callers = await self.store.callers(incident.service, incident.area, since, incident.opened_at + 1)
        sample = [inc.mask_number(split_member(c)[1]) for c in callers[-MAX_SAMPLE_CALLERS:] if split_member(c)[1]]
        data = {**work_order(incident), "sample_callers": sample}
        await self.webhooks.publish("incident.opened", data, key=f"incident:{incident.id}:opened")

    async def run(self) -> None:
        """Every instance: keep the announcements rendered; the lease holder: detect."""
        while True:
            interval = self.policy.interval_seconds  # each round: a reload may change it
            try:
                self.leader = await self.store.take_lease(self.instance, max(3 * interval, 2.0))
                if self.leader:
                    await self.detect_once()
                    await self.finish_resolves(wait=False)
                await self.render_active(await self.store.active())
            except (RedisError, OSError) as exc:
                log.warning("incident detector: Redis unavailable", extra={"error": str(exc)})
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    # -- by hand and the back office -------------------------------------------------------

    async def get(self, incident_id: str) -> inc.Incident:
        found = await self.store.get(incident_id)
        if found is None:
            raise IncidentNotFound(incident_id)
        return found

    async def subscriber_count(self, incident_id: str) -> int:
        return len(await self.store.subscribers(incident_id))

    async def list(self, *, state: str | None = None, limit: int = 100) -> list[inc.Incident]:
        found = await self.store.list(limit=limit)
        return [i for i in found if state is None or i.state.value == state]

    async def open(self, service: str, area: str, *, actor: str, planned: bool = True, cause: str = "",
                   expected_fix_at: float | None = None, area_names: Mapping[str, str] | None = None) -> inc.Incident:
        if service not in self.policy.services:
            raise IncidentError(f"unknown service {service!r}; known: {', '.join(self.policy.services)}")
        key = areas.area_key(area)
        if not key:
            raise IncidentError(f"not an area: {area!r}")
        names = dict(area_names or self.policy.areas.get(key) or {"en": area, "zh": area})
        incident = inc.open_incident(service, key, self.clock(), opened_by=actor, area_names=names, planned=planned,
                                     cause=cause, expected_fix_at=expected_fix_at)
        existing = await self.store.create(incident)
        if existing is not None:
            raise IncidentConflict(f"an incident is active for {service} in {key}: {existing}", existing)
        await self._work_order(incident)
        self._wake.set()
        return incident

    async def _change(self, incident_id: str, change: Callable[[inc.Incident], inc.Incident]) -> inc.Incident:
        for _ in range(5):
            current = await self.get(incident_id)
            try:
                changed = change(current)
            except inc.TransitionError as exc:
                raise IncidentError(str(exc)) from exc
            if changed is current:
                return current
            try:
                await self.store.save(changed, previous_revision=current.revision,
                                      cooldown_seconds=self.policy.cooldown_seconds)
            except Conflict:
                continue
            self._wake.set()
            return changed
        raise IncidentConflict("the incident keeps changing; try again")

    async def acknowledge(self, incident_id: str, *, actor: str) -> inc.Incident:
        incident = await self._change(incident_id, lambda i: inc.acknowledge(i, self.clock()))
        log.info("incident acknowledged", extra={"incident": incident_id, "actor": actor})
        return incident

    async def update(self, incident_id: str, *, actor: str, cause: str | None = None,
                     expected_fix_at: float | object | None = ...) -> inc.Incident:
        kwargs: dict[str, Any] = {"cause": cause}
        if expected_fix_at is not ...:
            kwargs["expected_fix_at"] = expected_fix_at
        before = await self.get(incident_id)
        incident = await self._change(incident_id, lambda i: inc.update(i, self.clock(), **kwargs))
        if incident.revision != before.revision and self.webhooks is not None:
            await self.webhooks.publish("incident.updated", work_order(incident),
                                        key=f"incident:{incident.id}:updated:{incident.revision}")
        log.info("incident updated", extra={"incident": incident_id, "actor": actor})
        return incident

    async def resolve(self, incident_id: str, *, actor: str, cause: str | None = None,
                      wait: float | None = None) -> ResolveReport:
        """Resolve, tell everyone who asked and every customer who complained (once each), archive
        the figures. The save that resolves marks the incident unfinished until its figures are
        archived: should this instance die between the steps, the detector's lease holder finishes
        it (`finish_resolves`); repeating a resolve does the same. No notice goes twice
        (NoticeService keys).

        `wait`: at most this many seconds for the notices (thousands take seconds); the report is
        then `pending` and they go on in the background (None: until they are done)."""
        incident = await self.get(incident_id)
        if incident.state is not inc.IncidentState.RESOLVED:
            incident = await self._change(incident_id, lambda i: inc.resolve(i, self.clock(), cause=cause))
            log.info("incident resolved", extra={"incident": incident_id, "actor": actor})
        task = self._follow(incident)
        if wait is not None:
            await asyncio.wait({task}, timeout=wait)
            if not task.done():
                return ResolveReport(incident, None, None)
        try:
            return await asyncio.shield(task)  # a request that goes away does not stop the notices
        except NoticesBusy:
            return ResolveReport(incident, None, None)  # the lease holder finishes them

    def _follow(self, incident: inc.Incident) -> asyncio.Task[ResolveReport]:
        """The follow-through of a resolved incident, one at a time per incident on this instance (a
        resolve repeated meanwhile, or the lease holder's finishing, joins it)."""
        task = self._following.get(incident.id)
        if task is None:
            task = asyncio.create_task(self._follow_through(incident), name=f"resolve-{incident.id}")
            self._following[incident.id] = task
            task.add_done_callback(lambda t: self._followed(incident.id, t))
        return task

    def _followed(self, incident_id: str, task: asyncio.Task[ResolveReport]) -> None:
        self._following.pop(incident_id, None)
        if task.cancelled():
            log.warning("incident %s: resolve stopped before its notices were done; the lease holder "
                        "finishes it", incident_id)
        elif isinstance(error := task.exception(), NoticesBusy):
            log.warning("incident %s: %s; the lease holder tries again", incident_id, error)
        elif error is not None:
            log.error("incident %s: resolve notices failed; the lease holder tries again", incident_id,
                      exc_info=error)
        else:
            report = task.result()
            log.info("incident resolve followed through", extra={
                "incident": incident_id, "notices": report.notices_scheduled, "refused": report.notices_refused})

    async def close(self) -> None:
        """Stop the follow-throughs in progress (at shutdown): they stay marked unfinished, and the
        detector's lease holder — this instance after a restart, or another — finishes them."""
        tasks = list(self._following.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def finish_resolves(self, now: float | None = None, *, wait: bool = True) -> list[str]:
        """The resolves an instance did not finish (it died after the resolve was saved, before the
        figures were archived), resolved at least `RESOLVE_GRACE_SECONDS` ago: their notices and
        figures, now (the detector does not `wait`: it goes on detecting meanwhile). The ids
        followed through (with `wait`: those finished; one that failed stays marked for the next
        round)."""
        now = self.clock() if now is None else now
        tasks: dict[str, asyncio.Task[ResolveReport]] = {}
        for incident_id in await self.store.unfinished(now - RESOLVE_GRACE_SECONDS):
            incident = await self.store.get(incident_id)
            if incident is None or not inc.unfinished(incident):
                await self.store.drop_unfinished(incident_id)
                continue
            if incident_id not in self._following:
                log.warning("incident %s: finishing a resolve left unfinished (notices, figures)", incident_id)
            tasks[incident_id] = self._follow(incident)
        if not wait or not tasks:
            return list(tasks)
        await asyncio.wait(tasks.values())
        return [i for i, t in tasks.items() if not t.cancelled() and t.exception() is None]

    async def _follow_through(self, incident: inc.Incident) -> ResolveReport:
        """A resolved incident's notices, archived figures and webhook."""
        incident_id = incident.id
        scheduled, refused = await self._notify(incident)
        since = float(incident.counts.get("first_report_at") or incident.opened_at)
        complaints = len(await self.store.callers(incident.service, incident.area, since,
                                                  incident.resolved_at or self.clock()))
        answered = sum(1 for o in await self.store.queued_outcomes(incident.id) if o == "answered")
        for _ in range(5):  # a notice delivered meanwhile changes the archive: read both again
            stats = await self.store.stats(incident.id)
            delivered = await self.store.delivered_count(incident.id)
            figures = inc.figures(
                incident, absorbed=stats.get("absorbed", 0), reached_agent=answered,
                # "reached_agent": what the stats called a call sent to a queue before they said so
                sent_to_queue=stats.get("sent_to_queue", 0) + stats.get("reached_agent", 0),
                hung_up=stats.get("hung_up", 0), went_to_menu=stats.get("went_to_menu", 0),
                complaints=complaints, notices_scheduled=scheduled,
                notices_refused=refused, notices_delivered=delivered)
            if dict(incident.figures) == figures:
                break
            archived = dataclasses.replace(incident, figures=figures, revision=incident.revision + 1)
            try:
                await self.store.save(archived, previous_revision=incident.revision,
                                      cooldown_seconds=self.policy.cooldown_seconds)
                incident = archived
                break
            except Conflict:
                incident = await self.get(incident_id)
        if self.webhooks is not None:
            data = {**work_order(incident), "figures": dict(incident.figures)}
            await self.webhooks.publish("incident.resolved", data, key=f"incident:{incident.id}:resolved")
        return ResolveReport(incident, scheduled, refused)

    async def on_notice_delivered(self, incident_id: str, notice_id: str) -> None:
        """A resolve notice of this incident was delivered (heard, or sent by SMS): the
        NoticeService calls this as it notes the outcome. Counted once per notice, and the archived
        figures say so (the incident is saved again: PostgreSQL's row follows through the outbox)."""
        try:
            count = await self.store.delivered(incident_id, notice_id)
            for _ in range(5):
                current = await self.store.get(incident_id)
                if current is None or current.state is not inc.IncidentState.RESOLVED:
                    return  # the resolve archives the count it reads
                changed = inc.with_delivered(current, count, self.clock())
                if changed is current:
                    return
                try:
                    await self.store.save(changed, previous_revision=current.revision,
                                          cooldown_seconds=self.policy.cooldown_seconds)
                    return
                except Conflict:
                    continue
            log.warning("incident %s: notices delivered not archived (changed concurrently too often)", incident_id)
        except (RedisError, OSError) as exc:
            log.warning("incident notice delivery not counted", extra={"incident": incident_id, "error": str(exc)})

    async def _notify(self, incident: inc.Incident) -> tuple[int, int]:
        """One notice per caller who asked, was offered the announcement (whatever they chose) or
        reported it; (scheduled, refused)."""
        if self.notices is None:
            log.warning("incident %s resolved: no notice service, nobody is told", incident.id)
            return 0, 0
        try:
            from ivrserver.domain.notices import NoticeRequest
        except ImportError:  # pragma: no cover - the notices module ships with the notices feature
            log.error("incident %s resolved: notices are not available in this build", incident.id)
            return 0, 0
        since = float(incident.counts.get("first_report_at") or incident.opened_at)
        until = incident.resolved_at or self.clock()
        asked = set(await self.store.subscribers(incident.id))
        heard = set(await self.store.heard(incident.id))  # every caller offered the announcement
        complained = set(await self.store.callers(incident.service, incident.area, since, until))
        customers: dict[str, str] = {}
        for raw in sorted(asked | heard | complained):
            customer_id, number = split_member(raw)
            # a caller without a customer record — one who pressed 1, or one who reported the fault
            # (the menu tells them "we will let you know when it is fixed") — is told at the number
            # they called from, within the default allowed hours of that number's region
            who = customer_id or (f"tel-{number.lstrip('+')}" if number else "")
            if who:
                customers.setdefault(who, number)
        text = inc.resolved_text(incident, self.policy)
        notices = self.notices
        told = {"scheduled": 0, "refused": 0, "busy": 0}

        async def tell(who: str) -> None:
            try:
                # a caller with no customer record is told at the number they called from
                result = await notices.schedule(NoticeRequest(
                    key=f"incident:{incident.id}:{who}", customer_id=who, kind="incident", text=text,
                    incident_id=incident.id, number=customers[who] or None if who.startswith("tel-") else None))
            except ValueError as exc:  # NoticeInvalid: e.g. a caller id the notices cannot take
                log.warning("incident notice refused", extra={"incident": incident.id, "error": str(exc)[:200]})
                told["refused"] += 1
                return
            except LockBusy:  # the others go on; this one is tried again with the whole resolve
                told["busy"] += 1
                return
            status, state = str(getattr(result, "status", "")), str(getattr(result, "state", "") or "")
            if status == "refused" or (status == "existing" and state == "refused"):
                told["refused"] += 1
            else:  # scheduled, deferred, sent by SMS, or existing (a repeated resolve)
                told["scheduled"] += 1

        # each notice is a few Redis round trips and waits on nobody else's: several at once (the
        # message is synthesized once per language: the renderer shares a render in progress)
        waiting = iter(sorted(customers))
        alive = {"at": self.clock()}

        async def worker() -> None:
            for who in waiting:
                await tell(who)
                if self.clock() - alive["at"] >= RESOLVE_GRACE_SECONDS / 4:
                    # still at it: another instance's finishing leaves this one alone meanwhile
                    alive["at"] = self.clock()
                    await self.store.still_unfinished(incident.id, alive["at"])

        await asyncio.gather(*(worker() for _ in range(max(1, self.notify_concurrency))))
        if told["busy"]:
            raise NoticesBusy(f"{told['busy']} of {len(customers)} callers' notices were locked elsewhere")
        return told["scheduled"], told["refused"]


def work_order(incident: inc.Incident) -> dict[str, Any]:
    """The webhook data of an incident (the network team's work order)."""
    counts = dict(incident.counts)
    return {"id": incident.id, "service": incident.service, "area": incident.area,
            "area_names": dict(incident.area_names), "state": incident.state.value, "planned": incident.planned,
            "opened_at": incident.opened_at, "opened_by": incident.opened_by, "cause": incident.cause,
            "expected_fix_at": incident.expected_fix_at,
            "counts": {"window": counts.get("window"), "baseline": counts.get("baseline")},
            "first_report_at": counts.get("first_report_at"), "latest_report_at": counts.get("latest_report_at")}


def pop_entry(incident: inc.Incident, policy: inc.Policy) -> dict[str, Any]:
    """`service_name` / `area_name` in English; `service_names` / `area_names` per language (the
    agent's page shows its own language's)."""
    return {"id": incident.id, "service": incident.service,
            "service_name": policy.service_name(incident.service, "en"),
            "service_names": {lang: policy.service_name(incident.service, lang) for lang in LANGUAGES},
            "area": incident.area, "area_name": incident.area_names.get("en", incident.area),
            "area_names": {lang: incident.area_names.get(lang) or incident.area_names.get("en") or incident.area
                           for lang in LANGUAGES},
            "state": incident.state.value, "cause": incident.cause, "expected_fix_at": incident.expected_fix_at,
            "opened_at": incident.opened_at}
