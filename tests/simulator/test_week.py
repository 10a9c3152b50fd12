"""Living devices and the week scenario's ground truth, pure: no processes, no event loop."""

from __future__ import annotations

import datetime as dt

import pytest

from tidings.client_sdk.quiet_hours import zone
from tidings.server.campaigns.capping import marketing_cap
from tidings.server.targeting.lifecycle import DEFAULT_THRESHOLDS, Lifecycle, Tier
from tidings.simulator.engine.living import (
    RHYTHMS,
    SESSION_MAX_S,
    active_window,
    day_sessions,
    reaction,
)
from tidings.simulator.engine.personas import plan
from tidings.simulator.engine.truth import (
    Life,
    abandoned,
    best_hour_at,
    cap_full,
    lift,
    over_cap,
)
from tidings.simulator.engine.week import first_midnight, slack_s

DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
PLANS = [plan(0, i) for i in range(300)]


def _local_hour(at: float, tz: str) -> float:
    t = dt.datetime.fromtimestamp(at, zone(tz))
    return t.hour + t.minute / 60


def test_sessions_are_deterministic_and_fall_inside_the_personas_active_hours() -> None:
    first = dt.date(2026, 1, 1)
    for p in PLANS:
        start, end = RHYTHMS[p.persona.name].active
        for day in range(5):
            sessions = day_sessions(0, p, first, day)
            assert sessions == day_sessions(0, p, first, day)
            for s in sessions:
                assert start <= _local_hour(s.at, p.persona.tz) < end
                assert not p.persona.quiet or not _quiet(p.persona.quiet, s.at, p.persona.tz)


def _quiet(window: tuple[str, str], at: float, tz: str) -> bool:
    from tidings.client_sdk import QuietHours

    return QuietHours(*window).is_quiet(at, tz)


def test_personas_drift_new_users_churn_and_dormant_users_mostly_stay_away() -> None:
    first = dt.date(2026, 1, 1)

    def active_days(name: str, days: range) -> list[int]:
        return [sum(1 for d in days if day_sessions(0, p, first, d))
                for p in PLANS if p.persona.name == name]  # fmt: skip

    dormant = active_days("dormant_user", range(28))
    assert sum(dormant) < 0.3 * 28 * len(dormant)  # away most days
    assert any(n > 0 for n in dormant)  # but some come back now and then
    new_late = active_days("new_user", range(14, 28))
    assert any(n == 0 for n in new_late) and any(n > 5 for n in new_late)  # churned and settled
    fans = active_days("sports_fan", range(28))
    assert min(fans) > 14


def test_a_relevant_message_brings_more_devices_to_the_app_than_a_generic_one() -> None:
    hunters = [p for p in PLANS if p.persona.name == "bargain_hunter"]
    relevant = [reaction(0, p, "c1", "sale", T0 + 3600) for p in hunters]
    generic = [reaction(0, p, "c1", "gaming", T0 + 3600) for p in hunters]
    assert sum(r.at is not None for r in relevant) > 3 * sum(r.at is not None for r in generic)
    for p, r in zip(hunters, relevant, strict=True):
        if r.at is not None:  # inside the next active window, whole session included
            day = dt.datetime.fromtimestamp(r.at, zone(p.persona.tz)).date()
            start, end = active_window(p.persona, day)
            assert start <= r.at <= end - SESSION_MAX_S and r.at >= T0 + 3600


def test_lifecycle_and_tier_of_a_life_follow_the_gateways_thresholds() -> None:
    th = DEFAULT_THRESHOLDS
    life = Life("u1", seen=(T0, T0 + DAY), purchases=((T0 + DAY, 30.0),))
    assert life.profile_at(T0 + 2 * DAY).lifecycle is Lifecycle.NEW
    idle = T0 + DAY + th.dormant_after_s
    assert life.profile_at(idle - 1).lifecycle is not Lifecycle.DORMANT
    assert life.profile_at(idle).lifecycle is Lifecycle.DORMANT
    assert life.profile_at(T0 + DAY + th.churned_after_s).lifecycle is Lifecycle.CHURNED
    assert life.profile_at(T0).tier is Tier.BASIC
    rich = Life("u2", seen=(T0,), purchases=tuple((T0 + i, 10.0) for i in range(th.high_count)))
    assert rich.profile_at(T0 + 60).tier is Tier.HIGH_VALUE


def test_the_checker_finds_a_marketing_message_over_the_cap_the_gateway_applies() -> None:
    life = Life("u1", seen=(T0, T0 + 10 * DAY))  # basic; new the first week, then active
    rule, _, _ = marketing_cap(life.profile_at(T0 + 3600))  # the one cap the gateway applies
    assert rule is not None
    cap = rule.limit
    sends = [T0 + 3600 * (k + 1) for k in range(cap + 1)]
    assert not any(over_cap(life, sends, t, 600) for t in sends[:cap])
    assert over_cap(life, sends, sends[cap], 600)
    assert cap_full(life, sends[:cap], sends[cap], 600)
    assert not cap_full(life, sends[: cap - 1], sends[cap], 600)


def test_a_send_right_after_a_change_of_stage_is_judged_by_the_more_lenient_stage() -> None:
    th = DEFAULT_THRESHOLDS
    life = Life("u1", seen=(T0 - 30 * DAY, T0), purchases=())
    dormant_at = T0 + th.dormant_after_s  # dormant: 2 a month instead of 2 a week
    early = [T0 + 1, T0 + 2]
    sends = [*early, dormant_at + 60]
    assert not over_cap(life, sends, dormant_at + 60, slack=600)
    assert over_cap(life, sends, dormant_at + 3600, slack=600)


def test_best_hour_abandoned_carts_and_lift_from_the_devices_logs() -> None:
    tz = "Asia/Shanghai"  # UTC+8: 12:00 UTC is 20:00 local
    life = Life("u1", seen=(T0,), sessions=((T0 + 12 * 3600, 3), (T0 + DAY + 1 * 3600, 2),
                                             (T0 + DAY + 12 * 3600, 1)))  # fmt: skip
    assert best_hour_at(life, tz, T0 + 3 * DAY, 19) == 20
    assert best_hour_at(life, tz, T0, 19) == 19  # nothing yet: the default
    assert abandoned([T0, T0 + 100], [T0 + 50], wait=60) == [T0 + 100]
    bought = {"a": [T0 + 10], "b": [], "c": [T0 + 5 * DAY]}
    assert lift({"a", "b"}, {"c"}, bought, T0, 2 * DAY) == (0.5, 0.0)


def test_day_zero_starts_at_the_next_utc_midnight_and_slack_grows_with_speed() -> None:
    assert first_midnight(T0 - 1) == T0 and first_midnight(T0) == T0 + DAY
    assert slack_s(1) == 600 and slack_s(3600) > slack_s(60)


@pytest.mark.parametrize("seed", [0, 7])
def test_the_fleet_plan_for_a_seed_is_the_same_every_time(seed: int) -> None:
    first = dt.date(2026, 3, 1)
    a = [day_sessions(seed, plan(seed, i), first, 3) for i in range(50)]
    b = [day_sessions(seed, plan(seed, i), first, 3) for i in range(50)]
    assert a == b and any(a)
