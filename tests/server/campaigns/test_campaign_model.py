"""Campaign definitions: JSON round trip and validation errors naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tidings.server.campaigns.model import (
    Campaign,
    CampaignError,
    CampaignKind,
    CampaignStatus,
    Reason,
)
from tidings.server.campaigns.sendtime import SendPolicy
from tidings.server.targeting.segments import Tag

FULL: dict[str, Any] = {
    "id": "cart-reminder",
    "app": "shop",
    "name": "Abandoned cart",
    "kind": "triggered",
    "status": "draft",
    "segment": {"tag": "sports_fan"},
    "content": {
        "kind": "banner",
        "title": "Hi {{ user.first_name | default('there') }}",
        "body": "Your {{ event.item | default('cart') }} is waiting",
        "image_url": "https://img.example/cart.png",
        "actions": [{"id": "open", "label": "Open", "url": "shop://cart"}],
        "data": {"sku": "{{ event.sku | default('') }}"},
        "category": "marketing",
        "priority": "normal",
        "ttl_s": 3600,
        "collapse_key": "cart",
    },
    "variants": [
        {"name": "a", "weight": 1.0},
        {"name": "b", "weight": 2.0, "content": {"title": "Still thinking?"}},
    ],
    "control_share": 0.1,
    "trigger": {
        "event": "add_to_cart",
        "where": [{"prop": "price", "op": "ge", "value": 50}],
        "unless": {"event": "purchase", "within_s": 3600},
        "delay_s": 3600,
        "window": {"start_at": 1_700_000_000, "end_at": 1_710_000_000},
    },
    "frequency": {"per_user_limit": 1, "per_user_window_s": 604800, "total_budget": 10000},
    "send_time": {
        "policy": "best_time",
        "default_hour": 19,
        "window": {"start": "09:00", "end": "21:00"},
    },
    "conversion": {"event": "purchase", "window_s": 86400},
}


def test_a_full_campaign_round_trips_through_json() -> None:
    c = Campaign.from_json(FULL)
    assert c.kind is CampaignKind.TRIGGERED and c.segment == Tag("sports_fan")
    assert c.send_time.policy is SendPolicy.BEST_TIME
    assert c.content_for("b").title == "Still thinking?"
    assert c.content_for("b").body == c.content.body
    assert c.content_for("control") is c.content
    assert c.to_json() == FULL
    assert Campaign.from_json(c.to_json()) == c


def test_conversion_where_takes_equalities_and_the_window_defaults_to_three_days() -> None:
    c = Campaign.from_json(FULL | {
        "conversion": {"event": "order_paid", "where": {"sku": "x", "paid": True}},
        "min_sample_per_variant": 200,
        "rollout": {"test_share": 0.2, "decide_after_s": 86400},
    })  # fmt: skip
    assert c.conversion is not None and c.conversion.window_s == 3 * 86_400
    assert [(f.prop, str(f.op), f.value) for f in c.conversion.where] == [
        ("sku", "eq", "x"), ("paid", "eq", True)
    ]  # fmt: skip
    assert c.min_sample_per_variant == 200
    assert c.rollout is not None and c.rollout.at_deadline == "best"
    assert c.rollout.check_every_s == 300
    assert Campaign.from_json(c.to_json()) == c


def test_a_rollout_needs_variants_to_test() -> None:
    with pytest.raises(CampaignError) as info:
        Campaign.from_json(
            FULL | {"variants": [], "rollout": {"test_share": 0.2, "decide_after_s": 3600}}
        )
    assert info.value.field == "rollout" and "two variants" in str(info.value)


def test_defaults_and_the_text_form_of_segments() -> None:
    c = Campaign.from_json(
        {
            "id": "hello",
            "app": "shop",
            "name": "Hello",
            "kind": "one_off",
            "segment": "tag:vip and lifecycle = active",
            "content": {"kind": "inbox", "body": "Welcome"},
        }
    )
    assert c.status is CampaignStatus.DRAFT
    assert c.content.ttl_s is None  # the app's inbox lifetime applies
    assert c.content.kind == "inbox"
    assert c.send_time.policy is SendPolicy.IMMEDIATE
    assert c.with_status(CampaignStatus.RUNNING).status is CampaignStatus.RUNNING


def patched(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(FULL)
    *parents, last = path.split(".")
    node: Any = data
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("id", "no spaces allowed", "id"),
        ("kind", "sometimes", "kind"),
        ("status", "done", "status"),
        ("colour", "red", "colour"),
        ("content", DELETE, "content"),
        ("content.kind", "push", "content.kind"),
        ("content", {"title": ""}, "content.body"),  # needs a title or a body
        ("content.title", "x" * 300, "content.title"),
        (
            "content.actions",
            [{"id": "a", "label": "A", "url": "u" * 3000}],
            "content.actions[0].url",
        ),
        ("content.actions", [{"id": "a", "label": "A", "url": "x"}] * 2, "content.actions[1].id"),
        ("content.data", {"k": 3}, "content.data.k"),
        ("content.ttl_s", 0, "content.ttl_s"),
        ("variants.1.name", "control", "variants[1].name"),
        ("variants.1.name", "a", "variants[1].name"),
        ("variants.0.weight", -1, "variants[0].weight"),
        ("variants.1.content", {"category": "x"}, "variants[1].content.category"),
        ("control_share", 1.5, "control_share"),
        ("segment", {"tag": ""}, "segment.tag"),
        ("segment", "tag:", "segment"),
        ("trigger", DELETE, "trigger"),
        ("trigger.event", "", "trigger.event"),
        ("trigger.where", [{"prop": "price", "op": "~", "value": 1}], "trigger.where[0].op"),
        ("trigger.unless", {"event": "purchase"}, "trigger.unless.within_s"),
        ("trigger.delay_s", -1, "trigger.delay_s"),
        ("trigger.window", {"start_at": 5, "end_at": 1}, "trigger.window.end_at"),
        ("frequency.per_user_limit", 0, "frequency.per_user_limit"),
        ("send_time.policy", "soon", "send_time.policy"),
        ("send_time.policy", "fixed", "send_time.at"),
        ("send_time.policy", "user_local", "send_time.local_time"),
        ("send_time.default_hour", 24, "send_time.default_hour"),
        ("send_time.window", {"start": "9", "end": "21:00"}, "send_time.window.start"),
        ("conversion", {"event": "purchase", "window_s": 5}, "conversion.window_s"),
        ("conversion", {"window_s": 3600}, "conversion.event"),
        ("conversion", {"event": "paid", "where": {"sku": ["x"]}}, "conversion.where.sku"),
        ("conversion", {"event": "paid", "where": "sku=x"}, "conversion.where"),
        ("conversion", {"event": "paid", "attribution": 3}, "conversion.attribution"),
        ("min_sample_per_variant", 0, "min_sample_per_variant"),
        ("min_sample_per_variant", "100", "min_sample_per_variant"),
        ("rollout", {"decide_after_s": 3600}, "rollout.test_share"),
        ("rollout", {"test_share": 1, "decide_after_s": 3600}, "rollout.test_share"),
        ("rollout", {"test_share": 0.2}, "rollout.decide_after_s"),
        (
            "rollout",
            {"test_share": 0.2, "decide_after_s": 3600, "at_deadline": "x"},
            "rollout.at_deadline",
        ),
        (
            "rollout",
            {"test_share": 0.2, "decide_after_s": 3600, "check_every_s": 0},
            "rollout.check_every_s",
        ),
        ("schedule", {"at": 1}, "schedule"),  # only scheduled campaigns have one
    ],
)
def test_invalid_campaigns_name_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(CampaignError) as info:
        Campaign.from_json(patched(path, value))
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(field + ":")


def test_scheduled_campaigns_need_exactly_one_schedule_time() -> None:
    base = {"id": "s", "app": "shop", "name": "S", "kind": "scheduled", "content": {"body": "x"}}
    with pytest.raises(CampaignError, match="schedule"):
        Campaign.from_json(base)
    with pytest.raises(CampaignError, match="exactly one"):
        Campaign.from_json(base | {"schedule": {"at": 1, "local_time": "09:00"}})
    c = Campaign.from_json(base | {"schedule": {"local_time": "09:30"}})
    assert c.schedule is not None and c.schedule.local_time == 9 * 60 + 30
    assert c.to_json()["schedule"] == {"local_time": "09:30"}


def test_decision_reasons_cover_the_decision_log() -> None:
    needed = {
        "not_in_segment", "opted_out", "capped_tier", "capped_lifecycle", "capped_campaign",
        "holdout", "budget_exhausted", "outside_send_window", "expired", "collapsed", "revoked",
        "sent",
    }  # fmt: skip
    assert needed <= {r.value for r in Reason}
