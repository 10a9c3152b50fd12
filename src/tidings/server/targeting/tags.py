"""Behaviour tags: rules as data, and a sliding-window evaluator that keeps tags current.

A :class:`TagRule` says "the user holds tag *name* while at least N *event* events (or events
whose *prop* sums to at least X) matching *where* happened in the last *window_s* seconds"::

    {"name": "sports_fan", "event": "view_content",
     "where": [{"prop": "category", "op": "eq", "value": "sports"}],
     "threshold": {"count": 3}, "window_s": 604800}

    {"name": "big_spender", "event": "purchase", "threshold": {"sum": "amount", "at_least": 500},
     "window_s": 2592000}

:class:`TagEngine` is a state machine with no clock of its own: :meth:`TagEngine.observe` feeds
one event evaluated at a given ``now`` (by default its own timestamp) and
:meth:`TagEngine.expire` is called with the current time to drop tags whose window slid past
their events.

The window is half-open, ``(now - window_s, now]``: an event exactly ``window_s`` old is
outside it. An event outside the window never counts, whenever it arrives.

Per (user, rule) the engine keeps only the entries that can still matter: for a count rule the
newest N timestamps, for a sum rule the (timestamp, value) pairs still in the window, capped at
:data:`MAX_WINDOW_ENTRIES`. Rules are indexed by event name, so an event costs O(rules for that
event name).
"""

from __future__ import annotations

import heapq
import math
from bisect import insort
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tidings.protocol import codes
from tidings.protocol.errors import TidingsError
from tidings.server.targeting.segments import (
    PropFilter,
    SegmentError,
    filter_from_json,
    filter_to_json,
)

__all__ = [
    "MAX_RULE_WINDOW_S",
    "MAX_WINDOW_ENTRIES",
    "TagChanges",
    "TagEngine",
    "TagRule",
    "TagRuleError",
    "Threshold",
]

MAX_RULE_WINDOW_S = 90 * 86_400
"""Longest tag rule window, in seconds."""

MAX_WINDOW_ENTRIES = 1_000
"""Security limit: most (timestamp, value) entries kept per (user, sum rule); the oldest go first.

Count rules never need more than their threshold N (also capped by this limit)."""

_NAME_MAX = 128


class TagRuleError(TidingsError):
    """A tag rule that is not valid; ``field`` names the offending JSON field."""

    code = codes.ERR_INVALID_FIELD

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Threshold:
    """``count >= at_least`` when ``prop`` is None, else ``sum(prop) >= at_least``."""

    at_least: float
    prop: str | None = None

    @property
    def is_count(self) -> bool:
        """True for a count threshold."""
        return self.prop is None


@dataclass(frozen=True, slots=True, kw_only=True)
class TagRule:
    """A behaviour tag defined by a windowed count or sum of matching events."""

    name: str
    event: str
    threshold: Threshold
    window_s: int
    where: tuple[PropFilter, ...] = ()

    def matches(self, name: str, props: Mapping[str, Any]) -> bool:
        """Return True when an event named ``name`` with ``props`` counts for this rule."""
        return name == self.event and all(f.matches(props) for f in self.where)

    def value_of(self, props: Mapping[str, Any]) -> float:
        """Return what one matching event adds: 1 for counts, the (finite, >= 0) prop for sums."""
        if self.threshold.prop is None:
            return 1.0
        v = props.get(self.threshold.prop)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return 0.0
        return max(0.0, float(v))

    @classmethod
    def from_json(cls, data: object) -> TagRule:
        """Build a rule from its JSON form; raise :class:`TagRuleError` naming the field."""
        if not isinstance(data, dict):
            raise TagRuleError("$", "a tag rule must be an object")
        extra = set(data) - {"name", "event", "where", "threshold", "window_s"}
        if extra:
            raise TagRuleError(sorted(extra)[0], "unknown field")
        name = _name(data.get("name"), "name")
        event = _name(data.get("event"), "event")
        window = data.get("window_s")
        if isinstance(window, bool) or not isinstance(window, int):
            raise TagRuleError("window_s", "must be a whole number of seconds")
        if not 0 < window <= MAX_RULE_WINDOW_S:
            raise TagRuleError("window_s", f"must be in 1..{MAX_RULE_WINDOW_S}")
        where_data = data.get("where", [])
        if not isinstance(where_data, list) or len(where_data) > 16:
            raise TagRuleError("where", "must be a list of at most 16 filters")
        try:
            where = tuple(filter_from_json(f, f"where[{i}]") for i, f in enumerate(where_data))
        except SegmentError as e:
            raise TagRuleError(e.path, e.problem) from None
        return cls(
            name=name,
            event=event,
            where=where,
            threshold=_threshold(data.get("threshold")),
            window_s=window,
        )

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (the inverse of :meth:`from_json`)."""
        th = self.threshold
        at_least: float = int(th.at_least) if th.at_least.is_integer() else th.at_least
        threshold: dict[str, Any] = (
            {"count": at_least} if th.prop is None else {"sum": th.prop, "at_least": at_least}
        )
        out: dict[str, Any] = {"name": self.name, "event": self.event}
        if self.where:
            out["where"] = [filter_to_json(f) for f in self.where]
        out.update(threshold=threshold, window_s=self.window_s)
        return out


def _name(v: object, field: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise TagRuleError(field, "must be a non-empty string")
    if len(v) > _NAME_MAX:
        raise TagRuleError(field, f"must be at most {_NAME_MAX} characters")
    return v


def _threshold(data: object) -> Threshold:
    if not isinstance(data, dict):
        raise TagRuleError("threshold", 'must be {"count": N} or {"sum": "prop", "at_least": X}')
    if "count" in data:
        if set(data) != {"count"}:
            raise TagRuleError("threshold", "a count threshold has only 'count'")
        n = data["count"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_WINDOW_ENTRIES:
            raise TagRuleError(
                "threshold.count", f"must be a whole number in 1..{MAX_WINDOW_ENTRIES}"
            )
        return Threshold(float(n))
    if "sum" in data:
        if set(data) != {"sum", "at_least"}:
            raise TagRuleError("threshold", "a sum threshold has 'sum' and 'at_least'")
        prop = _name(data["sum"], "threshold.sum")
        x = data["at_least"]
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x <= 0:
            raise TagRuleError("threshold.at_least", "must be a positive number")
        return Threshold(float(x), prop)
    raise TagRuleError("threshold", 'must be {"count": N} or {"sum": "prop", "at_least": X}')


@dataclass(frozen=True, slots=True)
class TagChanges:
    """Tags a user gained and lost through one call."""

    added: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class _Window:
    """Entries of one (user, rule), oldest first, and whether the tag is held."""

    __slots__ = ("due", "entries", "held", "total")

    def __init__(self, maxlen: int):
        self.entries: deque[tuple[float, float]] = deque(maxlen=maxlen)
        self.total = 0.0
        self.held = False
        self.due = math.inf  # the one live expiry-heap entry of this window

    def prune(self, now: float, window_s: float) -> None:
        entries = self.entries
        # An entry at ts counts while now - ts < window_s.
        while entries and entries[0][0] <= now - window_s:
            self.total -= entries.popleft()[1]
        if not entries:
            self.total = 0.0  # no float drift once empty

    def add(self, ts: float, value: float) -> None:
        entries = self.entries
        full = len(entries) == entries.maxlen
        if full and ts < entries[0][0]:
            return  # older than everything kept: it would be the first to go
        if full:
            self.total -= entries.popleft()[1]
        if not entries or ts >= entries[-1][0]:
            entries.append((ts, value))
        else:  # a late event: keep the deque ordered
            insort(entries, (ts, value))
        self.total += value


@dataclass(slots=True)
class TagEngine:
    """Sliding-window evaluator of tag rules for many users; see the module docstring."""

    rules: Iterable[TagRule] = ()
    _by_event: dict[str, list[TagRule]] = field(init=False, default_factory=dict)
    _by_name: dict[str, TagRule] = field(init=False, default_factory=dict)
    _state: dict[str, dict[str, _Window]] = field(init=False, default_factory=dict)
    _heap: list[tuple[float, str, str]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        for rule in self.rules:
            self.add_rule(rule)
        self.rules = ()

    def add_rule(self, rule: TagRule) -> None:
        """Start evaluating ``rule`` (for events observed from now on)."""
        if rule.name in self._by_name:
            raise TagRuleError("name", f"a rule named {rule.name!r} already exists")
        self._by_name[rule.name] = rule
        self._by_event.setdefault(rule.event, []).append(rule)

    def remove_rule(self, name: str) -> set[str]:
        """Stop evaluating the rule ``name``; return the users who held its tag."""
        rule = self._by_name.pop(name)
        self._by_event[rule.event].remove(rule)
        holders = set()
        for user, windows in self._state.items():
            w = windows.pop(name, None)
            if w is not None and w.held:
                holders.add(user)
        return holders

    def active_rules(self) -> list[TagRule]:
        """The rules being evaluated."""
        return list(self._by_name.values())

    @property
    def rule_names(self) -> frozenset[str]:
        """Names of the rules being evaluated."""
        return frozenset(self._by_name)

    def observe(
        self,
        user_id: str,
        name: str,
        props: Mapping[str, Any],
        ts: float,
        now: float | None = None,
    ) -> TagChanges:
        """Feed one event at unix time ``ts``, evaluated at ``now``; return the tag changes.

        ``now`` (default ``ts``) is the evaluation time: an event at or before
        ``now - window_s`` is outside the rule's window and never counts, so a late event
        cannot grant a tag, not even until the next :meth:`expire`.
        """
        rules = self._by_event.get(name)
        if not rules:
            return _NO_CHANGE
        added: set[str] = set()
        removed: set[str] = set()
        windows = self._state.get(user_id)
        for rule in rules:
            if not all(f.matches(props) for f in rule.where):
                continue
            if windows is None:
                windows = self._state[user_id] = {}
            th = rule.threshold
            w = windows.get(rule.name)
            if w is None:
                cap = int(th.at_least) if th.prop is None else MAX_WINDOW_ENTRIES
                w = windows[rule.name] = _Window(cap)
            at = ts if now is None else max(ts, now)
            at = max(at, w.entries[-1][0]) if w.entries else at
            if ts <= at - rule.window_s:
                continue  # outside the window: too late to count
            w.prune(at, rule.window_s)
            w.add(ts, rule.value_of(props))
            held = self._holds(w, rule)
            if held != w.held:
                w.held = held
                (added if held else removed).add(rule.name)
            self._schedule(user_id, rule, w)
        if not added and not removed:
            return _NO_CHANGE
        return TagChanges(frozenset(added), frozenset(removed))

    @staticmethod
    def _holds(w: _Window, rule: TagRule) -> bool:
        th = rule.threshold
        if th.prop is None:
            return len(w.entries) >= th.at_least
        return w.total >= th.at_least - 1e-9

    def _schedule(self, user_id: str, rule: TagRule, w: _Window) -> None:
        due = w.entries[0][0] + rule.window_s
        if due < w.due:  # otherwise the live heap entry fires earlier and reschedules
            w.due = due
            heapq.heappush(self._heap, (due, user_id, rule.name))

    def expire(self, now: float) -> dict[str, frozenset[str]]:
        """Slide every window to ``now``; return ``{user_id: tags dropped}``.

        Windows that become empty are forgotten, so memory follows the active users.
        """
        dropped: dict[str, set[str]] = {}
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, user_id, rule_name = heapq.heappop(heap)
            windows = self._state.get(user_id)
            w = windows.get(rule_name) if windows else None
            rule = self._by_name.get(rule_name)
            if w is None or rule is None or windows is None or w.due != due:
                continue  # stale entry
            w.due = math.inf
            w.prune(now, rule.window_s)
            if w.held and not self._holds(w, rule):
                w.held = False
                dropped.setdefault(user_id, set()).add(rule_name)
            if w.entries:
                self._schedule(user_id, rule, w)
            else:
                del windows[rule_name]
                if not windows:
                    del self._state[user_id]
        return {u: frozenset(t) for u, t in dropped.items()}

    def tags_of(self, user_id: str) -> frozenset[str]:
        """Return the rule tags ``user_id`` holds now (as of the last observe/expire)."""
        windows = self._state.get(user_id, {})
        return frozenset(name for name, w in windows.items() if w.held)

    def forget(self, user_id: str) -> None:
        """Drop everything about ``user_id`` (erasure); stale heap entries are skipped."""
        self._state.pop(user_id, None)

    def next_expiry(self) -> float | None:
        """Return the earliest time :meth:`expire` may have work, or None."""
        return self._heap[0][0] if self._heap else None

    @property
    def tracked(self) -> int:
        """Number of live (user, rule) windows: the engine's memory footprint."""
        return sum(len(w) for w in self._state.values())


_NO_CHANGE = TagChanges()
