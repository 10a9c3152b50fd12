"""The profile index resolves segments exactly like evaluating every profile."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.server.targeting.index import ProfileIndex
from tidings.server.targeting.lifecycle import Lifecycle
from tidings.server.targeting.profiles import Profile, with_tags
from tidings.server.targeting.segments import Event, Node, evaluate, parse

from .strategies import NOW, pool_profiles, pool_trees


def fake_events(user_id: str, node: Event, now: float) -> float:
    return float((len(user_id) * 7 + len(node.name) + node.within_s // 86_400) % 5)


def naive(profiles: list[Profile], tree: Node) -> set[str]:
    return {p.user_id for p in profiles if evaluate(tree, p, NOW, fake_events)}


@st.composite
def populations(draw: st.DrawFn) -> list[Profile]:
    n = draw(st.integers(0, 25))
    return [draw(pool_profiles(f"user-{i}")) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(populations(), st.lists(pool_trees(), min_size=1, max_size=4), st.integers(1, 4))
def test_resolve_equals_naive_evaluation(
    profiles: list[Profile], trees: list[Node], max_values: int
) -> None:
    index = ProfileIndex("shop", max_attr_values=max_values)
    for p in profiles:
        index.upsert(p)
    for tree in trees:
        assert index.resolve(tree, NOW, fake_events) == naive(profiles, tree)


@settings(max_examples=25, deadline=None)
@given(populations(), populations(), pool_trees())
def test_upserts_and_removals_keep_the_index_exact(
    first: list[Profile], second: list[Profile], tree: Node
) -> None:
    index = ProfileIndex("shop")
    for p in first:
        index.upsert(p)
    for p in second:  # same ids: replaces
        index.upsert(p)
    for p in second[::2]:
        index.remove(p.user_id)
    alive = {p.user_id: p for p in first} | {p.user_id: p for p in second}
    for p in second[::2]:
        alive.pop(p.user_id)
    assert len(index) == len(alive)
    assert index.resolve(tree, NOW, fake_events) == naive(list(alive.values()), tree)


def test_resolve_narrows_before_evaluating_expensive_conditions() -> None:
    index = ProfileIndex("shop")
    for i in range(100):
        p = Profile(app="shop", user_id=f"u{i}", lifecycle=Lifecycle.ACTIVE, last_seen=NOW)
        index.upsert(with_tags(p, frozenset({"vip"})) if i < 3 else p)
    asked: list[str] = []

    def events(user_id: str, node: Event, now: float) -> float:
        asked.append(user_id)
        return 1

    tree = parse("tag:vip and lifecycle = active and event buy count >= 1 within 1d")
    assert index.resolve(tree, NOW, events) == {"u0", "u1", "u2"}
    assert sorted(asked) == ["u0", "u1", "u2"]
    assert index.preview(tree, NOW, events, sample=2) == (3, ["u0", "u1"])


def test_index_refuses_profiles_of_another_app() -> None:
    index = ProfileIndex("shop")
    try:
        index.upsert(Profile(app="bank", user_id="u1"))
    except ValueError:
        pass
    else:
        raise AssertionError("accepted a foreign profile")
    assert "u1" not in index
