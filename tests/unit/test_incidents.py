"""Mass-fault detection, pure: window counter and threshold policy over tables (time passed in),
the incident lifecycle, caller areas and the policy file's errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivrserver.domain import areas
from ivrserver.domain import incidents as inc
from ivrserver.files import incident_policy

T0 = 1_780_000_000.0 - (1_780_000_000.0 % 3600)  # an hour boundary
POLICY = inc.Policy(window_seconds=600, bucket_seconds=60, min_count=20, ratio=5.0, baseline_hours=6,
                    cooldown_seconds=1800)


def feed(counter: inc.WindowCounter, start: float, seconds: float, per_minute: float) -> float:
    """`per_minute` complaints a minute, evenly, for `seconds` from `start`; returns the end."""
    if per_minute <= 0:
        return start + seconds
    step = 60.0 / per_minute
    t = start
    while t < start + seconds:
        counter.add(t)
        t += step
    return start + seconds


# (name, background per minute over 6 h, burst per minute, burst minutes, expected verdict)
BURSTS = [
    ("quiet pair, burst of 5/min for 5 min", 0.0, 5, 5, inc.Verdict.RAISE),
    ("quiet pair, 19 complaints", 0.0, 19 / 5, 5, inc.Verdict.BELOW_MINIMUM),
    ("quiet pair, 3/min for 10 min (30 ≥ 20)", 0.0, 3, 10, inc.Verdict.RAISE),
    ("busy pair: 4/min normal, 5/min is not a fault", 4.0, 5, 10, inc.Verdict.BELOW_RATIO),
    ("busy pair: 4/min normal, 25/min is (250 ≥ 5 × 40)", 4.0, 25, 10, inc.Verdict.RAISE),
    ("busy pair: 4/min normal, 19/min is not (190 < 200)", 4.0, 19, 10, inc.Verdict.BELOW_RATIO),
]


@pytest.mark.parametrize(("name", "background", "burst", "minutes", "verdict"), BURSTS, ids=[b[0] for b in BURSTS])
def test_bursts(name: str, background: float, burst: float, minutes: int, verdict: inc.Verdict) -> None:
    counter = inc.WindowCounter(POLICY)
    t = feed(counter, T0 - 7 * 3600, 7 * 3600, background)  # history up to T0
    t = feed(counter, t, minutes * 60, burst)
    assert inc.assess(counter.counts(t - 1), POLICY) is verdict


# A slow ramp lifts the baseline with it: hour by hour +1/min never looks like a fault; the same
# rise within ten minutes does.
RAMPS = [
    ("slow ramp 1→8/min over 8 hours", [1, 2, 3, 4, 5, 6, 7, 8], 60, inc.Verdict.BELOW_RATIO),
    ("fast ramp 1→30/min in 10 minutes", [1] * 7 + [30], 10, inc.Verdict.RAISE),
]


@pytest.mark.parametrize(("name", "hourly_rates", "last_minutes", "verdict"), RAMPS, ids=[r[0] for r in RAMPS])
def test_ramps(name: str, hourly_rates: list[int], last_minutes: int, verdict: inc.Verdict) -> None:
    counter = inc.WindowCounter(POLICY)
    t = T0
    for rate in hourly_rates[:-1]:
        t = feed(counter, t, 3600, rate)
    t = feed(counter, t, last_minutes * 60, hourly_rates[-1])
    assert inc.assess(counter.counts(t - 1), POLICY) is verdict


def test_two_areas_are_counted_apart() -> None:
    chaoyang, beijing = inc.WindowCounter(POLICY), inc.WindowCounter(POLICY)
    feed(chaoyang, T0, 300, 10)  # 50 complaints
    feed(beijing, T0, 300, 2)  # 10
    assert inc.assess(chaoyang.counts(T0 + 299), POLICY) is inc.Verdict.RAISE
    assert inc.assess(beijing.counts(T0 + 299), POLICY) is inc.Verdict.BELOW_MINIMUM


# (name, seconds since the last resolve (None: never), active incident, verdict for a raising burst)
GATES = [
    ("never raised", None, False, inc.Verdict.RAISE),
    ("resolved 10 min ago: cooling down", 600, False, inc.Verdict.COOLING_DOWN),
    ("resolved 29 min 59 s ago", 1799, False, inc.Verdict.COOLING_DOWN),
    ("resolved 30 min ago: may raise again", 1800, False, inc.Verdict.RAISE),
    ("planned outage open for the pair", None, True, inc.Verdict.ACTIVE),
]


@pytest.mark.parametrize(("name", "since_resolve", "active", "verdict"), GATES, ids=[g[0] for g in GATES])
def test_cooldown_and_planned_outage(name: str, since_resolve: float | None, active: bool,
                                     verdict: inc.Verdict) -> None:
    counter = inc.WindowCounter(POLICY)
    now = feed(counter, T0, 300, 10) - 1
    resolved_at = None if since_resolve is None else now - since_resolve
    assert inc.assess(counter.counts(now), POLICY, active=active, resolved_at=resolved_at, now=now) is verdict


def test_window_slides_out() -> None:
    counter = inc.WindowCounter(POLICY)
    feed(counter, T0, 120, 30)  # 60 complaints in 2 minutes
    assert counter.counts(T0 + 119).window == 60
    assert counter.counts(T0 + 119).first_at == T0
    assert counter.counts(T0 + 600 + 119).window == 0  # ten minutes later: out of the window


# (name, complaint times after T0, now after T0, expected first, expected latest): the complaints'
# own times, not the start of their 60 s buckets
FIRST_LATEST = [
    ("one complaint mid-bucket", [37.5], 50, 37.5, 37.5),
    ("two buckets", [42, 61, 119], 130, 42, 119),
    ("the first slid out of the window", [5, 610, 650], 700, 610, 650),
    ("nothing in the window", [5], 700, None, None),
]


@pytest.mark.parametrize(("name", "times", "now", "first", "latest"), FIRST_LATEST, ids=[f[0] for f in FIRST_LATEST])
def test_first_and_latest_reports_are_the_complaints_own_times(name: str, times: list[float], now: float,
                                                               first: float | None, latest: float | None) -> None:
    counter = inc.WindowCounter(POLICY)
    for t in times:
        counter.add(T0 + t)
    counts = counter.counts(T0 + now)
    assert counts.first_at == (None if first is None else T0 + first)
    assert counts.latest_at == (None if latest is None else T0 + latest)
    # without the times (an old counter): the buckets' starts, at most bucket_seconds early
    coarse = inc.counts_from(counter.short, counter.hourly, T0 + now, POLICY)
    if first is not None:
        assert coarse.first_at == T0 + first - (first % 60)


def test_time_to_detect_runs_from_the_first_complaint() -> None:
    counter = inc.WindowCounter(POLICY)
    for t in range(25):
        counter.add(T0 + 30 + t)  # the first at T0 + 30, half a bucket in
    opened = inc.open_incident("mobile_data", "a", T0 + 56, opened_by="detector", counts=counter.counts(T0 + 56))
    figures = inc.figures(inc.resolve(opened, T0 + 600), absorbed=0, reached_agent=0, complaints=25,
                          notices_scheduled=0)
    assert figures["time_to_detect_seconds"] == 26


def test_notices_delivered_only_grow() -> None:
    done = inc.resolve(inc.open_incident("mobile_data", "a", T0, opened_by="detector"), T0 + 60)
    assert inc.with_delivered(done, 0, T0 + 61) is done
    one = inc.with_delivered(done, 3, T0 + 61)
    assert one.figures["notices_delivered"] == 3 and one.revision == done.revision + 1
    assert inc.with_delivered(one, 2, T0 + 62) is one  # a late, smaller count never lowers it
    figures = inc.figures(one, absorbed=0, reached_agent=0, complaints=0, notices_scheduled=3, notices_delivered=1)
    assert figures["notices_delivered"] == 3


def test_a_resolve_is_unfinished_until_its_figures_are_archived() -> None:
    active = inc.open_incident("mobile_data", "a", T0, opened_by="detector")
    done = inc.resolve(active, T0 + 60)
    assert not inc.unfinished(active) and inc.unfinished(done)
    assert inc.unfinished(inc.with_delivered(done, 2, T0 + 61))  # a notice heard before the archive
    figures = inc.figures(done, absorbed=0, reached_agent=0, complaints=0, notices_scheduled=0)
    assert not inc.unfinished(replace(done, figures=figures))


def test_baseline_excludes_the_window_hour() -> None:
    counter = inc.WindowCounter(POLICY)
    feed(counter, T0 + 60, 300, 10)
    assert counter.counts(T0 + 359).baseline == 0  # its own burst is not its normal


# -- lifecycle -----------------------------------------------------------------------------------

def test_lifecycle() -> None:
    opened = inc.open_incident("mobile_data", "chaoyang-liaoning", T0, opened_by="detector",
                               counts=inc.Counts(30, 1.0, T0 - 300, T0 - 60), area_names={"en": "Chaoyang"})
    assert opened.id == f"inc-{int(T0)}-mobile_data-chaoyang-liaoning" and opened.active
    acked = inc.acknowledge(opened, T0 + 60)
    assert (acked.state, acked.revision) == (inc.IncidentState.ACKNOWLEDGED, 2)
    assert inc.acknowledge(acked, T0 + 61) is acked
    updated = inc.update(acked, T0 + 120, cause="fibre cut", expected_fix_at=T0 + 3600)
    assert (updated.cause, updated.expected_fix_at, updated.revision) == ("fibre cut", T0 + 3600, 3)
    assert inc.update(updated, T0 + 121, cause="fibre cut") is updated
    done = inc.resolve(updated, T0 + 7200)
    assert not done.active and done.resolved_at == T0 + 7200
    figures = inc.figures(done, absorbed=40, reached_agent=3, complaints=50, notices_scheduled=12)
    assert figures["time_to_detect_seconds"] == 300 and figures["time_to_fix_seconds"] == 7200
    for change in (lambda i: inc.acknowledge(i, T0), lambda i: inc.update(i, T0, cause="x"),
                   lambda i: inc.resolve(i, T0)):
        with pytest.raises(inc.TransitionError):
            change(done)


MATCHES = [
    ("same area, any service", "chaoyang-liaoning", (), True),
    ("same area, has mobile data", "chaoyang-liaoning", ("broadband", "mobile_data"), True),
    ("same area, broadband only", "chaoyang-liaoning", ("broadband",), False),
    ("other area", "beijing", (), False),
    ("no area", None, (), False),
]


@pytest.mark.parametrize(("name", "area", "services", "expected"), MATCHES, ids=[m[0] for m in MATCHES])
def test_matches(name: str, area: str | None, services: tuple[str, ...], expected: bool) -> None:
    incident = inc.open_incident("mobile_data", "chaoyang-liaoning", T0, opened_by="detector")
    assert inc.matches(incident, area, services) is expected
    assert not inc.matches(inc.resolve(incident, T0 + 1), area, services)


def test_announcement_text_in_both_languages() -> None:
    policy = incident_policy.load()
    incident = inc.open_incident("mobile_data", "chaoyang-liaoning", T0, opened_by="detector",
                                 area_names={"en": "Chaoyang", "zh": "朝阳"}, expected_fix_at=T0 + 3600)
    zone = ZoneInfo("Asia/Shanghai")
    fix = datetime.fromtimestamp(T0 + 3600, zone).strftime("%H:%M")
    assert inc.announcement_text(incident, policy, "en", zone) == \
        f"We know mobile data is out in Chaoyang; we are working on it. Expected fix {fix}."
    assert inc.announcement_text(incident, policy, "zh", zone) == \
        f"我们已获悉朝阳的移动数据故障，正在抢修。预计{fix}修复。"
    assert inc.resolved_text(incident, policy)["en"].startswith("Good news: mobile data in Chaoyang")


@pytest.mark.parametrize(("number", "masked"), [("+8613904210000", "+86139****0000"), ("10086", "*****"),
                                                ("+15550001", "+15****01")])
def test_mask_number(number: str, masked: str) -> None:
    assert inc.mask_number(number) == masked


# -- areas ---------------------------------------------------------------------------------------

AREAS = [
    ("mobile prefix → city", {}, "+8613904210000", "chaoyang-liaoning", "Chaoyang", "朝阳市"),
    ("Beijing mobile", {}, "+8613800138000", "beijing", "Beijing", "北京市"),
    ("fixed line area code 010", {}, "+861058001234", "beijing", "Beijing", "北京市"),
    ("profile wins over the number", {"area": "Chaoyang, Liaoning"}, "+8613800138000", "chaoyang-liaoning",
     "Chaoyang, Liaoning", "Chaoyang, Liaoning"),
    ("profile area in Chinese", {"area": "朝阳区"}, None, "朝阳区", "朝阳区", "朝阳区"),
    ("a service number has no area", {}, "10086", None, None, None),
    ("withheld", {}, None, None, None, None),
    ("hostile profile text", {"area": "\x00;DROP\n"}, None, "drop", ";DROP", ";DROP"),
]


@pytest.mark.parametrize(("name", "attributes", "number", "key", "en", "zh"), AREAS, ids=[a[0] for a in AREAS])
def test_caller_area(name: str, attributes: dict[str, str], number: str | None, key: str | None,
                     en: str | None, zh: str | None) -> None:
    area = areas.caller_area(attributes, number)
    if key is None:
        assert area is None
        return
    assert area is not None and area.key == key
    assert (area.name("en"), area.name("zh")) == (en, zh)


def test_policy_names_override_the_geocoder() -> None:
    area = areas.caller_area({}, "+8613904210000", {"chaoyang-liaoning": {"zh": "朝阳"}})
    assert area is not None and area.names == {"en": "Chaoyang", "zh": "朝阳"}


# -- policy file ---------------------------------------------------------------------------------

BAD_FILES = [
    ("unknown key", "windw: 600\nservices: {mobile_data: {en: m}}\n", ':1:1: error: unknown key "windw"'),
    ("window not a multiple", "window: 90\nbucket: 60\nservices: {mobile_data: {en: m}}\n", "not a multiple"),
    ("ratio out of range", "ratio: 0.5\nservices: {mobile_data: {en: m}}\n", ":1:1: error: ratio: expected a number"),
    ("bad service name", "services: {Mobile-Data: {en: m}}\n", "a service name is lower-case"),
    ("unknown queue", "services: {mobile_data: {en: m, queue: falts}}\n", "unknown queue 'falts'"),
    ("no English name", "services: {mobile_data: {zh: 移动}}\n", "needs at least an English name"),
    ("bad time zone", "timezone: Mars/Base\nservices: {mobile_data: {en: m}}\n", "unknown time zone"),
    ("area key not normal", "services: {mobile_data: {en: m}}\nareas: {Chaoyang: {en: C}}\n",
     'did you mean "chaoyang"'),
    ("not a mapping", "- 1\n", "expected a mapping"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_policy_file_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / "incidents.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(incident_policy.IncidentPolicyError) as err:
        incident_policy.load(path, queues=("faults", "general"))
    assert message in str(err.value), str(err.value)
    assert str(path) in err.value.problems[0]


def test_shipped_policy_is_valid() -> None:
    policy = incident_policy.load(queues=("vip", "general", "billing", "faults", "sales"))
    assert set(policy.services) == {"mobile_data", "broadband", "fixed_line"}
    assert policy.window_seconds % policy.bucket_seconds == 0


def test_doctor_checks_the_incident_policy(tmp_path: Path) -> None:
    from ivrserver import config
    from ivrserver.commands.doctor import _check_incidents

    good = _check_incidents(config.Settings())
    assert good is not None and good.ok
    bad_file = tmp_path / "incidents.yaml"
    bad_file.write_text("ratio: 0\nservices: {mobile_data: {en: m}}\n", encoding="utf-8")
    bad = _check_incidents(config.from_mapping({"incidents": {"policy_file": str(bad_file)}}))
    assert bad is not None and not bad.ok and "ratio" in bad.detail and str(bad_file) in bad.fix
    assert _check_incidents(config.from_mapping({"incidents": {"enabled": False}})) is None
