"""The audience: who each app's users are now — live profiles, behaviour tags, segments.

:class:`Audience` keeps, per app, every profile in a :class:`ProfileIndex` and the behaviour tags
in a :class:`TagEngine`, both fed as events arrive (from devices and from ``POST /v1/events``)
and rebuilt at start from the store: profiles from their rows, tags and active hours by
replaying the last :data:`REPLAY_S` of events. Lifecycle stages and value tiers change with time
alone; a heap of each user's next change lets :meth:`Audience.refresh` move only the users due.

Segments resolve against the index; their event conditions are answered with one store read per
condition. The campaign engine asks the audience who is in a segment and runs campaigns on the
answer; nothing here knows about campaigns.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from tidings.protocol.errors import InvalidField
from tidings.server.changes import TagRuleChanged
from tidings.server.feed import Announce, alone
from tidings.server.storage import AudienceStore, ProfileRow
from tidings.server.targeting.explain import failed_part
from tidings.server.targeting.index import ProfileIndex
from tidings.server.targeting.lifecycle import DEFAULT_THRESHOLDS, Thresholds, next_change_at
from tidings.server.targeting.profiles import (
    DEFAULT_AMOUNT_PROP,
    DEFAULT_PURCHASE_EVENT,
    Profile,
    apply_attributes,
    apply_device,
    apply_events,
    local_hour,
    new_profile,
    reclassify,
    set_consent,
    with_tags,
)
from tidings.server.targeting.segments import Event as EventCond
from tidings.server.targeting.segments import EventSource, Node, evaluate, walk
from tidings.server.targeting.tags import TagEngine, TagRule

if TYPE_CHECKING:  # the policy module reads targeting's defaults: no import at run time
    from tidings.server.policy import AppPolicy

__all__ = ["REPLAY_S", "Audience"]

REPLAY_S = 90 * 86_400
"""Events this old or newer are replayed at start (the longest tag window is 90 days)."""


@dataclass(slots=True)
class _AppUsers:
    index: ProfileIndex
    tags: TagEngine = field(default_factory=TagEngine)
    reclass: list[tuple[float, str]] = field(default_factory=list)
    due: dict[str, float] = field(default_factory=dict)  # user -> their live reclass entry


class Audience:
    """Live profiles, tags and segment resolution of every app hosted by one node.

    Args:
        store: Where profiles, events and tag rules are stored (read at start and for event
            conditions; tag rules are written here).
        apps: The ids of the hosted apps; any other app is refused with :class:`InvalidField`.
        clock: The current time in seconds.
        policy: Each app's policy now (lifecycle and tier thresholds, the value event); see
            :meth:`policy_changed`. None: the defaults for every app.
    """

    def __init__(
        self,
        *,
        store: AudienceStore,
        apps: Iterable[str],
        clock: Callable[[], float],
        announce: Announce = alone,
        policy: Callable[[str], AppPolicy] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.announce = announce
        self.policy = policy
        self._app_ids = tuple(apps)
        self._apps: dict[str, _AppUsers] = {}

    async def start(self) -> None:
        """Rebuild profiles, tags and active hours from the store."""
        store, now = self.store, self.clock()
        for app in self._app_ids:
            self._apps[app] = state = _AppUsers(ProfileIndex(app))
            name, amount = self._value_event(app)
            for row in await store.profile_rows(app, value_event=name, amount_prop=amount):
                state.index.upsert(_profile_from_row(app, row))
        for app, spec in await store.tag_rules():
            if app in self._apps:
                self._apps[app].tags.add_rule(TagRule.from_json(spec))
        for app, state in self._apps.items():
            profiles: dict[str, Profile] = {}
            for e in await store.events_since(app, now - REPLAY_S):
                p = profiles.get(e.user_key) or state.index.get(e.user_key)
                if p is None:
                    continue
                state.tags.observe(e.user_key, e.name, e.props, e.ts, now)
                hours = list(p.active_hours)
                hours[local_hour(e.ts, p.tz)] += 1
                profiles[e.user_key] = replace(p, active_hours=tuple(hours))
            state.tags.expire(now)
            for p in state.index:
                p = profiles.get(p.user_id, p)
                self._put(app, with_tags(p, added=state.tags.tags_of(p.user_id)), now)

    def _state(self, app: str) -> _AppUsers:
        state = self._apps.get(app)
        if state is None:
            raise InvalidField("app", f"unknown app {app!r}")
        return state

    # --- profiles -----------------------------------------------------------------------------

    def profile(self, app: str, user_key: str) -> Profile | None:
        """The live profile of a user (lifecycle and tier current as of the last refresh)."""
        return self._state(app).index.get(user_key)

    def _get_or_new(self, app: str, user_key: str, now: float) -> Profile:
        return self._state(app).index.get(user_key) or new_profile(app, user_key, now)

    def _put(self, app: str, profile: Profile, now: float) -> Profile:
        state = self._apps[app]
        th = self._thresholds(app)
        profile = reclassify(profile, now, th)
        state.index.upsert(profile)
        due = next_change_at(profile.first_seen, profile.last_seen, profile.last_purchase, now, th)
        if due is not None and state.due.get(profile.user_id) != due:
            state.due[profile.user_id] = due
            heapq.heappush(state.reclass, (due, profile.user_id))
        return profile

    def on_device(self, app: str, user_key: str, *, tz: str, locale: str, platform: str,
                  app_version: str) -> None:  # fmt: skip
        """A device said hello: its facts describe the user now."""
        now = self.clock()
        p = self._get_or_new(app, user_key, now)
        p = apply_device(p, tz=tz, locale=locale, platform=platform, app_version=app_version)
        self._put(app, replace(p, last_seen=max(p.last_seen, now)), now)

    def on_attrs(self, app: str, user_key: str, attrs: Mapping[str, Any]) -> None:
        """Attributes were merged into a profile (``None`` removes one)."""
        now = self.clock()
        self._put(app, apply_attributes(self._get_or_new(app, user_key, now), attrs), now)

    def on_consent(self, app: str, user_key: str, categories: Mapping[str, bool]) -> None:
        """A user chose which categories of messages they accept."""
        now = self.clock()
        p = self._get_or_new(app, user_key, now)
        for category, allowed in categories.items():
            p = set_consent(p, category, allowed)
        self._put(app, p, now)

    def on_events(
        self,
        app: str,
        user_key: str,
        events: Iterable[tuple[str, Mapping[str, Any], float]],
        now: float | None = None,
    ) -> Profile:
        """Behaviour events of one user (already stored): update the profile and the tags.

        An event time after ``now`` (default: the clock) counts as ``now``: a device clock
        ahead of ours does not make the future.

        Returns:
            The updated profile.
        """
        state = self._state(app)
        now = self.clock() if now is None else now
        fired = [(name, props, min(ts, now)) for name, props, ts in events]
        # A user first known through events is first and last seen when they happened, not
        # when they arrived: 40-day-old events make a churned user, not an active one.
        known = state.index.get(user_key) or (
            Profile(app=app, user_id=user_key) if fired else new_profile(app, user_key, now)
        )
        name, amount = self._value_event(app)
        p = apply_events(known, fired, purchase_event=name, amount_prop=amount)
        for name, props, ts in fired:
            changes = state.tags.observe(user_key, name, props, ts, now)
            if changes:
                p = with_tags(p, changes.added, changes.removed)
        return self._put(app, p, now)

    def _thresholds(self, app: str) -> Thresholds:
        return DEFAULT_THRESHOLDS if self.policy is None else self.policy(app).thresholds

    def _value_event(self, app: str) -> tuple[str, str]:
        if self.policy is None:
            return DEFAULT_PURCHASE_EVENT, DEFAULT_AMOUNT_PROP
        value = self.policy(app).value_event
        return value.name, value.amount

    async def policy_changed(self, app: str, before: AppPolicy) -> None:
        """The app's policy changed from ``before``: every profile follows it now.

        A new value event recounts every user's purchases from the stored events; new
        thresholds move every user to the stage and tier they now give.
        """
        assert self.policy is not None
        state, now, policy = self._state(app), self.clock(), self.policy(app)
        if policy.value_event != before.value_event:
            value = policy.value_event
            rows = await self.store.profile_rows(
                app, value_event=value.name, amount_prop=value.amount
            )
            for row in rows:
                p = state.index.get(row.user_key)
                if p is not None:
                    state.index.upsert(replace(p, purchase_count=row.purchase_count,
                                               purchase_total=row.purchase_total,
                                               last_purchase=row.last_purchase))  # fmt: skip
        if policy.value_event != before.value_event or policy.thresholds != before.thresholds:
            state.reclass.clear()
            state.due.clear()
            for p in list(state.index):
                self._put(app, p, now)

    def forget(self, app: str, user_key: str) -> None:
        """Drop everything live about an erased user (the store erases the rows)."""
        state = self._state(app)
        state.index.remove(user_key)
        state.tags.forget(user_key)
        state.due.pop(user_key, None)

    def refresh(self, app: str, now: float) -> None:
        """Drop expired tags and move users whose lifecycle or tier changed with time."""
        state = self._apps[app]
        for user, dropped in state.tags.expire(now).items():
            p = state.index.get(user)
            if p is not None:
                self._put(app, with_tags(p, removed=dropped), now)
        heap = state.reclass
        while heap and heap[0][0] <= now:
            due, user = heapq.heappop(heap)
            if state.due.get(user) != due:
                continue  # superseded by a later entry
            del state.due[user]
            p = state.index.get(user)
            if p is not None:
                self._put(app, p, now)

    # --- segments -----------------------------------------------------------------------------

    async def _event_source(
        self, app: str, tree: Node, now: float, user: str | None = None
    ) -> EventSource | None:
        """Answer the tree's event conditions with one store read per condition."""
        conds = [n for n in walk(tree) if isinstance(n, EventCond)]
        if not conds:
            return None
        values: dict[EventCond, dict[str, float]] = {}
        for cond in conds:
            per_user: dict[str, float] = {}
            for e in await self.store.events_since(
                app, now - cond.within_s, name=cond.name, user_key=user
            ):
                if e.ts > now or not all(f.matches(e.props) for f in cond.where):
                    continue
                if cond.agg == "count":
                    add = 1.0
                else:
                    v = e.props.get(cond.prop or "")
                    add = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0
                per_user[e.user_key] = per_user.get(e.user_key, 0.0) + add
            values[cond] = per_user

        def source(user_id: str, cond: EventCond, at: float) -> float:
            return values.get(cond, {}).get(user_id, 0.0)

        return source

    async def in_segment(self, app: str, tree: Node, p: Profile, now: float) -> bool:
        """Whether one profile is in a segment at ``now`` (its event conditions read for it)."""
        events = await self._event_source(app, tree, now, user=p.user_id)
        return evaluate(tree, p, now, events)

    async def why_not(self, app: str, tree: Node, p: Profile, now: float) -> str | None:
        """The part of a segment one profile does not match at ``now``, in words, or None
        when it is in the segment (:func:`~tidings.server.targeting.explain.failed_part`)."""
        events = await self._event_source(app, tree, now, user=p.user_id)
        return failed_part(tree, p, now, events)

    async def resolve(self, app: str, tree: Node) -> set[str]:
        """The users in a segment now."""
        now = self.clock()
        self.refresh(app, now)
        events = await self._event_source(app, tree, now)
        return self._state(app).index.resolve(tree, now, events)

    async def preview(self, app: str, tree: Node, sample: int = 10) -> tuple[int, list[str]]:
        """Audience size of a segment now, and a sample of its user ids."""
        users = await self.resolve(app, tree)
        return len(users), sorted(users)[:sample]

    # --- tag rules ----------------------------------------------------------------------------

    def tag_rules(self, app: str) -> list[TagRule]:
        """The app's tag rules."""
        tags = self._state(app).tags
        return sorted(tags.active_rules(), key=lambda r: r.name)

    async def put_tag_rule(self, app: str, rule: TagRule) -> None:
        """Create or replace a tag rule; stored events within its window count at once."""
        await self.store.save_tag_rule(app, rule.name, rule.to_json())
        await self._use_rule(app, rule)
        await self.announce(TagRuleChanged(app, rule.name))

    async def reload_tag_rule(self, app: str, name: str) -> None:
        """Another node changed a tag rule: take the stored one (or its absence)."""
        stored = {spec.get("name"): spec for a, spec in await self.store.tag_rules() if a == app}
        state = self._state(app)
        if name in stored:
            await self._use_rule(app, TagRule.from_json(stored[name]))
        elif name in state.tags.rule_names:
            self._untag(app, name, state.tags.remove_rule(name), self.clock())

    async def _use_rule(self, app: str, rule: TagRule) -> None:
        state, now = self._state(app), self.clock()
        if rule.name in state.tags.rule_names:
            self._untag(app, rule.name, state.tags.remove_rule(rule.name), now)
        state.tags.add_rule(rule)
        gained: set[str] = set()
        for e in await self.store.events_since(app, now - rule.window_s, name=rule.event):
            if rule.name in state.tags.observe(e.user_key, e.name, e.props, e.ts, now).added:
                gained.add(e.user_key)
        state.tags.expire(now)
        for user in gained:
            p = state.index.get(user)
            if p is not None and rule.name in state.tags.tags_of(user):
                self._put(app, with_tags(p, added=frozenset({rule.name})), now)

    async def delete_tag_rule(self, app: str, name: str) -> bool:
        """Delete a tag rule; its holders lose the tag. False if there was no such rule."""
        state = self._state(app)
        if name not in state.tags.rule_names:
            return False
        await self.store.save_tag_rule(app, name, None)
        self._untag(app, name, state.tags.remove_rule(name), self.clock())
        await self.announce(TagRuleChanged(app, name))
        return True

    def _untag(self, app: str, tag: str, users: Iterable[str], now: float) -> None:
        index = self._apps[app].index
        for user in users:
            p = index.get(user)
            if p is not None:
                self._put(app, with_tags(p, removed=frozenset({tag})), now)


def _profile_from_row(app: str, row: ProfileRow) -> Profile:
    return Profile(
        app=app,
        user_id=row.user_key,
        attrs=MappingProxyType(dict(row.attrs)),
        consent=MappingProxyType(dict(row.consent)),
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        tz=row.tz,
        locale=row.locale,
        platform=row.platform,
        app_version=row.app_version,
        purchase_count=row.purchase_count,
        purchase_total=row.purchase_total,
        last_purchase=row.last_purchase,
    )
