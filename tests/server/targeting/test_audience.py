"""The audience on its own: a store, app ids and a clock, and no campaign engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tidings.protocol.errors import InvalidField
from tidings.protocol.frames import Event
from tidings.server.storage import SqliteStore
from tidings.server.targeting import Audience, TagRule, parse

NOW = 1_700_000_000.0
FAN = {"name": "fan", "event": "view", "threshold": {"count": 2}, "window_s": 86_400}


@pytest_asyncio.fixture
async def store(tmp_path: Path, loop_errors: list[dict[str, Any]]) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "t.db"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def started(store: SqliteStore, now: float = NOW) -> Audience:
    audience = Audience(store=store, apps=["demo"], clock=lambda: now)
    await audience.start()
    return audience


async def view(store: SqliteStore, audience: Audience, user: str, ts: float) -> None:
    event = Event(id=f"{user}-{ts}", name="view", ts=int(ts * 1000))
    await store.insert_events("demo", "backend", user, [event], NOW)
    audience.on_events("demo", user, [(event.name, event.props, ts)])


async def test_tags_follow_events_and_a_rule_put_later_counts_stored_events(
    store: SqliteStore,
) -> None:
    audience = await started(store)
    await store.merge_attrs("demo", "u1", {"age": 30}, NOW)
    audience.on_attrs("demo", "u1", {"age": 30})
    await view(store, audience, "u1", NOW - 10)
    await view(store, audience, "u1", NOW - 5)
    assert await audience.resolve("demo", parse("tag:fan")) == set()
    await audience.put_tag_rule("demo", TagRule.from_json(FAN))
    assert await audience.preview("demo", parse("tag:fan")) == (1, ["u1"])


async def test_a_new_audience_over_the_same_store_rebuilds_profiles_and_tags(
    store: SqliteStore,
) -> None:
    first = await started(store)
    await first.put_tag_rule("demo", TagRule.from_json(FAN))
    await store.merge_attrs("demo", "u1", {"age": 30}, NOW)
    first.on_attrs("demo", "u1", {"age": 30})
    await view(store, first, "u1", NOW - 10)
    await view(store, first, "u1", NOW - 5)
    again = await started(store, NOW + 1)
    p = again.profile("demo", "u1")
    assert p is not None and p.attrs["age"] == 30 and "fan" in p.tags
    assert [r.name for r in again.tag_rules("demo")] == ["fan"]


async def test_event_times_ahead_of_the_clock_count_as_now(store: SqliteStore) -> None:
    audience = await started(store)
    p = audience.on_events("demo", "u1", [("open", {}, NOW + 3600)])
    assert p.last_seen == NOW


async def test_a_forgotten_user_is_gone_and_other_apps_are_refused(store: SqliteStore) -> None:
    audience = await started(store)
    audience.on_consent("demo", "u1", {"marketing": False})
    assert audience.profile("demo", "u1") is not None
    audience.forget("demo", "u1")
    assert audience.profile("demo", "u1") is None
    with pytest.raises(InvalidField):
        audience.profile("other", "u1")
