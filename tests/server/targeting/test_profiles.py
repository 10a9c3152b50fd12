"""Profile updates are pure functions returning new values."""

from __future__ import annotations

import pytest

from tidings.server.targeting.lifecycle import Lifecycle, Tier
from tidings.server.targeting.profiles import (
    Profile,
    allows,
    apply_attributes,
    apply_device,
    apply_event,
    best_hour,
    local_hour,
    new_profile,
    reclassify,
    set_consent,
    with_tags,
)

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def test_events_fill_the_active_hour_bucket_in_local_time() -> None:
    p = new_profile("shop", "u1", T0, tz="Asia/Shanghai")
    q = apply_event(p, "view_content", {}, T0)
    assert q.active_hours[6] == 1  # 22:13 UTC is 06:13 in Shanghai
    assert p.active_hours[6] == 0  # the original is untouched
    assert local_hour(T0, "") == 22
    assert local_hour(T0, "Not/AZone") == 22
    assert local_hour(T0, "../../etc/passwd") == 22


def test_seen_times_follow_late_and_early_events() -> None:
    p = new_profile("shop", "u1", T0)
    p = apply_event(p, "x", {}, T0 - 100)
    p = apply_event(p, "x", {}, T0 + 50)
    assert (p.first_seen, p.last_seen) == (T0 - 100, T0 + 50)


@pytest.mark.parametrize(
    ("amount", "total"),
    [(10, 10.0), (2.5, 2.5), ("12", 0.0), (-5, 0.0), (float("inf"), 0.0), (True, 0.0)],
)
def test_purchases_update_the_statistics(amount: object, total: float) -> None:
    p = apply_event(new_profile("shop", "u1", T0), "purchase", {"amount": amount}, T0 + 1)
    assert (p.purchase_count, p.purchase_total, p.last_purchase) == (1, total, T0 + 1)


def test_reclassify_uses_the_injected_now() -> None:
    p = new_profile("shop", "u1", T0)
    p = apply_event(p, "purchase", {"amount": 2000}, T0)
    assert reclassify(p, T0) == p.__class__(**{**_fields(p), "tier": Tier.HIGH_VALUE})
    later = reclassify(p, T0 + 8 * 86_400)
    assert (later.lifecycle, later.tier) == (Lifecycle.DORMANT, Tier.HIGH_VALUE)
    assert reclassify(later, T0 + 8 * 86_400) is later


def _fields(p: Profile) -> dict[str, object]:
    return {f: getattr(p, f) for f in p.__dataclass_fields__}


def test_attributes_merge_and_none_deletes() -> None:
    p = apply_attributes(new_profile("shop", "u1", T0), {"region": "CN-SH", "age": 30})
    p = apply_attributes(p, {"age": None, "first_name": "Li"})
    assert dict(p.attrs) == {"region": "CN-SH", "first_name": "Li"}


def test_device_facts_consent_and_tags() -> None:
    p = new_profile("shop", "u1", T0)
    assert apply_device(p) is p
    p = apply_device(p, tz="Asia/Tokyo", platform="ios")
    assert (p.tz, p.platform, p.locale) == ("Asia/Tokyo", "ios", "")
    p = set_consent(p, "marketing", False)
    assert not allows(p, "marketing") and allows(p, "news")
    assert set_consent(p, "transactional", False) is p and allows(p, "transactional")
    p = with_tags(p, added=frozenset({"a", "b"}))
    assert with_tags(p, removed=frozenset({"a"})).tags == {"b"}


@pytest.mark.parametrize(
    ("hours", "expected"),
    [((0,) * 24, 19), ((0,) * 20 + (5, 0, 5, 0), 20), ((1,) + (0,) * 23, 0)],
)
def test_best_hour_picks_the_earliest_busiest_hour(hours: tuple[int, ...], expected: int) -> None:
    assert best_hour(hours, default_hour=19) == expected
