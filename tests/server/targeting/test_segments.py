"""Segments: JSON and text forms, the parser's errors, and evaluation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.server.targeting.lifecycle import Lifecycle, Tier
from tidings.server.targeting.profiles import Profile
from tidings.server.targeting.segments import (
    AllOf,
    AnyOf,
    Attr,
    Consent,
    Event,
    Field,
    LastSeen,
    LifecycleIn,
    Node,
    Not,
    Op,
    PropFilter,
    SegmentError,
    SegmentSyntaxError,
    Tag,
    TierIn,
    evaluate,
    from_json,
    parse,
    to_json,
    to_text,
    version_key,
)

from .strategies import DAY, NOW, trees

SHOES = (PropFilter("category", Op.EQ, "shoes"),)
EXAMPLE = (
    'tag:sports_fan and lifecycle in (active, new) and not attr.region = "CN-BJ" and '
    'event purchase count >= 2 within 30d where category = "shoes" and last_seen within 7d '
    'and app_version >= "2.3"'
)


def test_example_from_the_spec_parses_to_the_expected_tree() -> None:
    assert parse(EXAMPLE) == AllOf(
        (
            Tag("sports_fan"),
            LifecycleIn((Lifecycle.ACTIVE, Lifecycle.NEW)),
            Not(Attr("region", Op.EQ, "CN-BJ")),
            Event("purchase", "count", Op.GE, 2, 30 * DAY, SHOES),
            LastSeen("within", 7 * DAY),
            Field("app_version", Op.GE, "2.3"),
        )
    )
    assert to_text(parse(EXAMPLE)) == EXAMPLE


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("TAG:vip AND Lifecycle = ACTIVE", "tag:vip and lifecycle = active"),
        ("tag:a or tag:b and tag:c", "tag:a or tag:b and tag:c"),
        ("(tag:a or tag:b) and tag:c", "(tag:a or tag:b) and tag:c"),
        ("(tag:a and tag:b) and tag:c", "(tag:a and tag:b) and tag:c"),
        ("not (tag:a or tag:b)", "not (tag:a or tag:b)"),
        ("not not tag:a", "not not tag:a"),
        ("((tag:a))", "tag:a"),
        ("attr.age between 18 and 30", "attr.age between 18 and 30"),
        (
            "attr.region not in (CN-SH, 'x')" if False else "attr.region not in (CN-SH, x)",
            'attr.region not in ("CN-SH", "x")',
        ),
        ("attr.vip == true", "attr.vip = true"),
        ("attr.email exists", "attr.email exists"),
        ('attr."first name" contains "Li"', 'attr."first name" contains "Li"'),
        ('attr.note = "say \\"hi\\"\\n"', 'attr.note = "say \\"hi\\"\\n"'),
        ("attr.score >= 2.5", "attr.score >= 2.5"),
        ("attr.n > -3", "attr.n > -3"),
        ("platform in (ios, android)", 'platform in ("ios", "android")'),
        ('tz = "Asia/Shanghai"', 'tz = "Asia/Shanghai"'),
        ("last_seen older than 4w", "last_seen older than 28d"),
        ("last_seen within 36h", "last_seen within 36h"),
        ("last_seen within 90m", "last_seen within 90m"),
        ("last_seen within 61s", "last_seen within 61s"),
        (
            "event order count >= 5 within 14d where (service = takeout and city in (s, b))",
            'event order count >= 5 within 14d where (service = "takeout" and city in ("s", "b"))',
        ),
        (
            "event purchase sum(amount) > 100 within 30d",
            "event purchase sum(amount) > 100 within 30d",
        ),
        ('event "app.open" count = 0 within 7d', 'event "app.open" count = 0 within 7d'),
        ("consent:marketing", "consent:marketing"),
        ("tier in (high_value, potential)", "tier in (high_value, potential)"),
        ("everyone", "everyone"),
    ],
)
def test_text_prints_canonically(text: str, canonical: str) -> None:
    tree = parse(text)
    assert to_text(tree) == canonical
    assert parse(canonical) == tree


@settings(max_examples=300, deadline=None)
@given(trees())
def test_any_tree_survives_text_and_json_round_trips(tree: Node) -> None:
    text = to_text(tree)
    assert parse(text) == tree
    assert to_text(parse(text)) == text
    assert from_json(json.loads(json.dumps(to_json(tree)))) == tree


SEGMENTISH = r"(tag:|attr\.|event |not |\(|\)| and | or |[a-z]+| = |\"|[0-9]+d?)+"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.from_regex(SEGMENTISH, fullmatch=True))
def test_parse_returns_a_tree_or_raises_the_documented_error(text: str) -> None:
    try:
        tree = parse(text)
    except SegmentSyntaxError as e:
        assert 1 <= e.column <= len(text) + 1
        assert e.code == "invalid_field"
    else:
        assert parse(to_text(tree)) == tree


@pytest.mark.parametrize(
    ("text", "column", "problem"),
    [
        ("tag:vip and attr.region =", 26, "expected a value after '='"),
        ("tag:", 5, "expected a tag name after ':'"),
        ("tag vip", 5, "expected ':' after 'tag'"),
        ("lifecycle = sleepy", 13, "expected one of new, active, dormant, churned"),
        ("tag:a and", 10, "expected a condition"),
        ("tag:a tag:b", 7, "expected 'and', 'or' or the end of the segment"),
        ("(tag:a", 7, "expected ')' to close the '('"),
        ('attr.x = "abc', 10, "unterminated string"),
        ("attr.x ~ 1", 8, "unexpected character '~'"),
        ("attr.x between 5 and 1", 16, "between needs low <= high"),
        ("event buy count >= 2", 21, "expected 'within'"),
        ("event buy count >= 2 within 2.5d", 29, "a duration is a whole number"),
        ("event buy total >= 2 within 2d", 11, "expected 'count' or 'sum(prop)'"),
        ("last_seen since 7d", 11, "expected 'within' or 'older than'"),
        ("colour = red", 1, "unknown condition 'colour'"),
        ("attr.x not 3", 12, "expected 'in' after 'not'"),
        ("platform = 3", 12, "platform compares with strings"),
    ],
)
def test_parse_errors_point_at_the_column(text: str, column: int, problem: str) -> None:
    with pytest.raises(SegmentSyntaxError) as info:
        parse(text)
    assert info.value.column == column
    assert info.value.problem.startswith(problem)
    line, caret = str(info.value).split("\n")
    assert line == text
    assert caret.index("^") == column - 1
    assert caret.endswith(info.value.problem)


def test_parse_rejects_absurdly_deep_or_long_input() -> None:
    with pytest.raises(SegmentSyntaxError, match="deeper"):
        parse("(" * 100 + "tag:a" + ")" * 100)
    with pytest.raises(SegmentSyntaxError, match="deeper"):
        parse("not " * 100 + "tag:a")
    with pytest.raises(SegmentSyntaxError, match="longer"):
        parse("tag:a or " * 2000 + "tag:b")


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ([], "$"),
        ({"tag": "a", "attr": "b"}, "$"),
        ({"all": [{"tag": ""}]}, "$.all[0].tag"),
        (
            {"all": [{"tag": "a"}, {"not": {"attr": "x", "op": "near", "value": 1}}]},
            "$.all[1].not.op",
        ),
        ({"any": []}, "$.any"),
        ({"attr": "x", "op": "in", "value": []}, "$.value"),
        ({"attr": "x", "op": "eq", "value": float("nan")}, "$.value"),
        ({"attr": "x", "op": "exists", "value": 1}, "$.value"),
        ({"attr": "x", "value": 1}, "$.op"),
        ({"tag": "a", "colour": 1}, "$.colour"),
        ({"lifecycle": ["asleep"]}, "$.lifecycle"),
        ({"field": "height", "op": "eq", "value": "x"}, "$.field"),
        ({"last_seen": "within", "seconds": 0}, "$.seconds"),
        ({"event": "buy", "agg": "avg", "op": "ge", "value": 1, "within_s": 60}, "$"),
        (
            {"event": "buy", "op": "ge", "value": 1, "within_s": 60, "where": [{"prop": "c"}]},
            "$.where[0].op",
        ),
        ({"event": "buy", "op": "ge", "value": 1, "within_s": -5}, "$.within_s"),
    ],
)
def test_from_json_errors_name_the_path(data: Any, path: str) -> None:
    with pytest.raises(SegmentError) as info:
        from_json(data)
    assert info.value.path == path
    assert str(info.value).startswith(path + ":")


def test_one_child_groups_collapse_and_empty_all_means_everyone() -> None:
    assert from_json({"all": [{"tag": "a"}]}) == Tag("a")
    assert from_json({"all": []}) == AllOf(())
    assert from_json({"lifecycle": "new"}) == LifecycleIn((Lifecycle.NEW,))


# --- evaluation ----------------------------------------------------------------------------------

USER = Profile(
    app="shop",
    user_id="u1",
    attrs={"region": "CN-SH", "age": 30, "vip": True, "interests": ["shoes", "tea"], "nick": "Li"},
    tags=frozenset({"sports_fan"}),
    lifecycle=Lifecycle.ACTIVE,
    tier=Tier.POTENTIAL,
    consent={"marketing": False},
    first_seen=NOW - 90 * DAY,
    last_seen=NOW - 2 * DAY,
    tz="Asia/Shanghai",
    locale="zh-CN",
    platform="ios",
    app_version="2.3.1",
)


def purchases(user_id: str, node: Event, now: float) -> float:
    """Fake event store: 3 shoe purchases worth 120 in the last 30 days."""
    if node.name != "purchase" or node.within_s < 30 * DAY:
        return 0
    if any(f.prop == "category" and f.value != "shoes" for f in node.where):
        return 0
    return 120 if node.agg == "sum" else 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tag:sports_fan", True),
        ("tag:night_owl", False),
        ('attr.region = "CN-SH"', True),
        ('attr.region != "CN-SH"', False),
        ('attr.missing != "x"', False),
        ('not attr.missing = "x"', True),
        ("attr.missing exists", False),
        ("attr.age exists", True),
        ("attr.age = 30.0", True),
        ("attr.age >= 18 and attr.age < 31", True),
        ("attr.age between 30 and 40", True),
        ('attr.age > "20"', False),
        ("attr.vip = true", True),
        ("attr.vip = 1", False),
        ("attr.age in (1, 30)", True),
        ("attr.age not in (1, 30)", False),
        ('attr.interests contains "tea"', True),
        ('attr.interests = "tea"', False),
        ('attr.nick contains "i"', True),
        ("attr.region > CN-BJ", True),
        ("lifecycle in (new, active)", True),
        ("tier = high_value", False),
        ('locale = "zh-CN" and platform = ios and tz = "Asia/Shanghai"', True),
        ('app_version >= "2.3"', True),
        ('app_version > "2.3.1"', False),
        ('app_version = "2.3.1.0"', True),
        ('app_version < "2.10"', True),
        ('app_version in ("2.3.1", "9")', True),
        ("last_seen within 7d", True),
        ("last_seen within 1d", False),
        ("last_seen older than 2d", True),
        ("consent:marketing", False),
        ("consent:transactional", True),
        ("consent:news", True),
        ("event purchase count >= 2 within 30d where category = shoes", True),
        ("event purchase count >= 2 within 30d where category = tea", False),
        ("event purchase sum(amount) >= 100 within 30d", True),
        ("event purchase count >= 2 within 7d", False),
        ("tag:night_owl or attr.vip = true", True),
        ("everyone", True),
        ("not everyone", False),
    ],
)
def test_evaluate(text: str, expected: bool) -> None:
    assert evaluate(parse(text), USER, NOW, purchases) is expected


def test_event_conditions_without_an_event_source_are_an_error() -> None:
    with pytest.raises(SegmentError, match="event source"):
        evaluate(parse("event buy count > 0 within 1d"), USER, NOW)


@pytest.mark.parametrize(
    ("a", "b"),
    [("2.3", "2.3.0"), ("v2.3", "2.3"), ("2.3.0+build7", "2.3")],
)
def test_versions_that_are_equal(a: str, b: str) -> None:
    assert version_key(a) == version_key(b)


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("2.3", "2.3.1"),
        ("2.9", "2.10"),
        ("2.3.0-beta", "2.3.0"),
        ("garbage", "0.1"),
        ("1.99999999999999999999", "2"),
    ],
)
def test_versions_order_semver_ishly(lower: str, higher: str) -> None:
    assert version_key(lower) < version_key(higher)


def test_nodes_are_frozen_values() -> None:
    node: Node = AnyOf((Tag("a"), Consent("m"), TierIn((Tier.BASIC,))))
    assert node == parse("tag:a or consent:m or tier = basic")
    with pytest.raises(AttributeError):
        node.children = ()  # type: ignore[misc]
