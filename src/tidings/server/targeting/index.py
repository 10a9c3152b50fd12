"""An in-memory inverted index over one app's profiles, resolving segments with set algebra.

Indexed (exactly, for every profile): tags, lifecycle stages, value tiers, consent opt-outs,
presence of every attribute, and equality of scalar values of attributes and of ``locale``,
``tz`` and ``platform``. An attribute whose number of distinct values passes
``max_attr_values`` (an e-mail address, a user id) stops being equality-indexed and is
answered by evaluation instead.

:meth:`ProfileIndex.resolve` walks the tree: a subtree built only from indexable conditions
becomes set algebra (``all`` = intersection, smallest first; ``any`` = union; ``not`` = the
universe minus the set); the remaining conditions (ranges, ``contains``, ``last_seen``,
``app_version``, event counts) are evaluated per profile, but only on the candidates the
indexable siblings left. The result always equals evaluating
:func:`tidings.server.targeting.segments.evaluate` on every profile.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from tidings.server.targeting.lifecycle import Lifecycle, Tier
from tidings.server.targeting.profiles import TRANSACTIONAL, Profile
from tidings.server.targeting.segments import (
    AllOf,
    AnyOf,
    Attr,
    Consent,
    Event,
    EventSource,
    Field,
    LifecycleIn,
    Node,
    Not,
    Op,
    Scalar,
    Tag,
    TierIn,
    equality_key,
    evaluate,
)

__all__ = ["DEFAULT_MAX_ATTR_VALUES", "INDEXED_FIELDS", "ProfileIndex"]

DEFAULT_MAX_ATTR_VALUES = 1_000
"""Distinct values above which an attribute's equality index is dropped (memory bound)."""

INDEXED_FIELDS = ("locale", "tz", "platform")
"""Built-in fields with equality indexes (``app_version`` compares semver-ishly: evaluated)."""

_EMPTY: frozenset[str] = frozenset()
_Key = tuple[str, Scalar]


@dataclass(slots=True)
class _Values:
    """Index of one attribute or field: who has it, who has a scalar, who has which value."""

    present: set[str] = field(default_factory=set)
    scalar: set[str] = field(default_factory=set)
    eq: dict[_Key, set[str]] = field(default_factory=dict)
    overflow: bool = False


class ProfileIndex:
    """Profiles of one app, indexed for segment resolution; see the module docstring."""

    def __init__(self, app: str, *, max_attr_values: int = DEFAULT_MAX_ATTR_VALUES):
        self.app = app
        self.max_attr_values = max_attr_values
        self._profiles: dict[str, Profile] = {}
        self._universe: set[str] = set()
        self._tags: dict[str, set[str]] = {}
        self._lifecycle: dict[Lifecycle, set[str]] = {s: set() for s in Lifecycle}
        self._tier: dict[Tier, set[str]] = {t: set() for t in Tier}
        self._opted_out: dict[str, set[str]] = {}
        self._values: dict[str, _Values] = {}

    # --- maintenance ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._profiles)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._profiles

    def __iter__(self) -> Iterator[Profile]:
        return iter(self._profiles.values())

    def get(self, user_id: str) -> Profile | None:
        """Return the indexed profile of ``user_id``, or None."""
        return self._profiles.get(user_id)

    def upsert(self, profile: Profile) -> None:
        """Add or replace a profile."""
        if profile.app != self.app:
            raise ValueError(f"profile of app {profile.app!r} in the index of {self.app!r}")
        old = self._profiles.get(profile.user_id)
        if old is profile:
            return
        if old is not None and _same_facets(old, profile):
            # Only unindexed facts changed (last seen, active hours, purchases): the hot path
            # of event ingest, so no re-indexing.
            self._profiles[profile.user_id] = profile
            return
        if old is not None:
            self._unindex(old)
        self._profiles[profile.user_id] = profile
        self._index(profile)

    def remove(self, user_id: str) -> None:
        """Remove a profile (erasure); unknown ids are ignored."""
        old = self._profiles.pop(user_id, None)
        if old is not None:
            self._unindex(old)

    def _pairs(self, p: Profile) -> Iterator[tuple[str, object]]:
        for name, value in p.attrs.items():
            yield "a:" + name, value
        for name in INDEXED_FIELDS:
            value = getattr(p, name)
            yield "f:" + name, value or None

    def _index(self, p: Profile) -> None:
        uid = p.user_id
        self._universe.add(uid)
        for tag in p.tags:
            self._tags.setdefault(tag, set()).add(uid)
        self._lifecycle[p.lifecycle].add(uid)
        self._tier[p.tier].add(uid)
        for category, allowed in p.consent.items():
            if not allowed and category != TRANSACTIONAL:
                self._opted_out.setdefault(category, set()).add(uid)
        for name, value in self._pairs(p):
            if value is None:
                continue
            vals = self._values.get(name)
            if vals is None:
                vals = self._values[name] = _Values()
            vals.present.add(uid)
            key = equality_key(value)
            if key is None:
                continue
            vals.scalar.add(uid)
            if vals.overflow:
                continue
            bucket = vals.eq.get(key)
            if bucket is None:
                if len(vals.eq) >= self.max_attr_values:
                    vals.overflow = True
                    vals.eq.clear()
                    continue
                bucket = vals.eq[key] = set()
            bucket.add(uid)

    def _unindex(self, p: Profile) -> None:
        uid = p.user_id
        self._universe.discard(uid)
        for tag in p.tags:
            holders = self._tags.get(tag)
            if holders is not None:
                holders.discard(uid)
                if not holders:
                    del self._tags[tag]
        self._lifecycle[p.lifecycle].discard(uid)
        self._tier[p.tier].discard(uid)
        for category in p.consent:
            out = self._opted_out.get(category)
            if out is not None:
                out.discard(uid)
        for name, value in self._pairs(p):
            vals = self._values.get(name)
            if vals is None or value is None:
                continue
            vals.present.discard(uid)
            vals.scalar.discard(uid)
            key = equality_key(value)
            bucket = vals.eq.get(key) if key is not None else None
            if bucket is not None:
                bucket.discard(uid)
                if not bucket:
                    del vals.eq[key]  # type: ignore[arg-type]

    # --- resolution -----------------------------------------------------------------------

    def resolve(self, tree: Node, now: float, events: EventSource | None = None) -> set[str]:
        """Return the ids of the users in segment ``tree`` at ``now``."""
        return self._eval(tree, None, now, events)

    def preview(
        self, tree: Node, now: float, events: EventSource | None = None, sample: int = 10
    ) -> tuple[int, list[str]]:
        """Return the audience size and a deterministic sample of user ids."""
        ids = self.resolve(tree, now, events)
        return len(ids), sorted(ids)[:sample]

    def _exact(self, node: Node) -> set[str] | frozenset[str] | None:
        """Answer ``node`` from the indexes alone, or None. The result must not be mutated."""
        if isinstance(node, Tag):
            return self._tags.get(node.name, _EMPTY)
        if isinstance(node, LifecycleIn):
            return _union([self._lifecycle[s] for s in node.stages])
        if isinstance(node, TierIn):
            return _union([self._tier[t] for t in node.tiers])
        if isinstance(node, Consent):
            if node.category == TRANSACTIONAL:
                return self._universe
            return self._universe - self._opted_out.get(node.category, _EMPTY)
        if isinstance(node, Attr):
            return self._values_exact("a:" + node.name, node.op, node.value)
        if isinstance(node, Field):
            if node.field not in INDEXED_FIELDS:
                return None
            return self._values_exact("f:" + node.field, node.op, node.value)
        if isinstance(node, AllOf | AnyOf):
            if not node.children:
                return self._universe
            sets = []
            for child in node.children:
                s = self._exact(child)
                if s is None:
                    return None
                sets.append(s)
            if isinstance(node, AnyOf):
                return _union(sets)
            sets.sort(key=len)
            out = set(sets[0])
            for s in sets[1:]:
                out &= s
            return out
        if isinstance(node, Not):
            s = self._exact(node.child)
            return None if s is None else self._universe - s
        return None

    def _values_exact(self, name: str, op: Op, value: object) -> set[str] | frozenset[str] | None:
        vals = self._values.get(name)
        if vals is None:
            return _EMPTY  # nobody has it: every comparison is false
        if op is Op.EXISTS:
            return vals.present
        if op not in _INDEXABLE_OPS or vals.overflow:
            return None
        keys = value if isinstance(value, tuple) else (value,)
        hits = _union([vals.eq.get(k, _EMPTY) for k in map(equality_key, keys) if k is not None])
        if op is Op.EQ or op is Op.IN:
            return hits
        return vals.scalar - hits

    def _eval(
        self, node: Node, cands: set[str] | None, now: float, events: EventSource | None
    ) -> set[str]:
        """Return the (fresh) subset of ``cands`` (None = everyone) that satisfies ``node``."""
        exact = self._exact(node)
        if exact is not None:
            return set(exact) if cands is None else cands & exact
        if isinstance(node, AllOf):
            known: list[set[str] | frozenset[str]] = []
            rest: list[Node] = []
            for child in node.children:
                s = self._exact(child)
                if s is None:
                    rest.append(child)
                else:
                    known.append(s)
            cur = cands
            for s in sorted(known, key=len):
                cur = set(s) if cur is None else cur & s
            for child in sorted(rest, key=_cost):
                cur = self._eval(child, cur, now, events)
            assert cur is not None
            return cur
        if isinstance(node, AnyOf):
            result: set[str] = set()
            remaining = cands
            children = sorted(node.children, key=_cost)
            for i, child in enumerate(children):
                got = self._eval(child, remaining, now, events)
                result |= got
                if i + 1 < len(children):
                    remaining = (self._universe if remaining is None else remaining) - got
            return result
        if isinstance(node, Not):
            base = self._universe if cands is None else cands
            return base - self._eval(node.child, cands, now, events)
        profiles = self._profiles
        base = self._universe if cands is None else cands
        return {uid for uid in base if evaluate(node, profiles[uid], now, events)}


_INDEXABLE_OPS = frozenset({Op.EQ, Op.NE, Op.IN, Op.NOT_IN, Op.EXISTS})


def _same_facets(a: Profile, b: Profile) -> bool:
    """True when every indexed facet of two versions of a profile is the same."""
    return (
        a.tags == b.tags
        and a.lifecycle is b.lifecycle
        and a.tier is b.tier
        and (a.attrs is b.attrs or a.attrs == b.attrs)
        and (a.consent is b.consent or a.consent == b.consent)
        and all(getattr(a, f) == getattr(b, f) for f in INDEXED_FIELDS)
    )


def _union(sets: list[set[str]] | list[set[str] | frozenset[str]]) -> set[str] | frozenset[str]:
    if len(sets) == 1:
        return sets[0]
    out: set[str] = set()
    for s in sets:
        out |= s
    return out


def _cost(node: Node) -> int:
    """Rough cost of evaluating ``node`` per profile: cheap filters first, event queries last."""
    if isinstance(node, Event):
        return 3
    if isinstance(node, AllOf | AnyOf | Not):
        return 1 + max((_cost(c) for c in _children(node)), default=0)
    return 1


def _children(node: AllOf | AnyOf | Not) -> tuple[Node, ...]:
    return (node.child,) if isinstance(node, Not) else node.children
