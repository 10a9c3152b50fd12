"""Per-app policy: frequency caps, lifecycle and tier thresholds, the value event, categories.

One frozen :class:`AppPolicy` per app. Its defaults follow the seeds; the TOML file (``[[apps]]``
tables) changes them per app, and the admin API (``PUT /v1/settings``) changes them again at
run time (stored per app, announced to the other nodes of a cluster). Both speak the same
document, validated by :meth:`AppPolicy.updated` with errors naming the key path::

    {"categories": ["promotions", "news", "reminders"],
     "value_event": {"name": "order_paid", "amount": "total"},
     "caps": {"lifecycle": {"active": {"limit": 4, "days": 7}, "new": "none"},
              "tier": {"basic": {"limit": 2, "days": 7}},
              "min_gap_hours": 4},
     "thresholds": {"new_for_days": 7, "dormant_after_days": 7, "churned_after_days": 30,
                    "hot_days": 30, "cold_days": 90, "high_count": 5, "high_total": 1000,
                    "potential_count": 2, "potential_total": 200}}

Every key is optional: what a document leaves out keeps the value it updates (the defaults,
or the file's). A cap table is updated stage by stage; ``"none"`` (or JSON ``null``) removes
a stage's cap. Which cap binds a user is :func:`tidings.server.campaigns.capping.limits_for`'s
rule: the lifecycle stage's cap when the stage has one, else the value tier's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from tidings.protocol.errors import InvalidField
from tidings.protocol.frames import CATEGORY_NAME
from tidings.server.targeting.lifecycle import DAY, DEFAULT_THRESHOLDS, Lifecycle, Thresholds, Tier
from tidings.server.targeting.profiles import (
    DEFAULT_AMOUNT_PROP,
    DEFAULT_PURCHASE_EVENT,
    TRANSACTIONAL,
)

__all__ = [
    "BUILTIN_CATEGORIES",
    "DEFAULT_CAPS",
    "DEFAULT_LIFECYCLE_CAPS",
    "DEFAULT_POLICY",
    "DEFAULT_TIER_CAPS",
    "DEFAULT_VALUE_EVENT",
    "MARKETING",
    "MAX_CATEGORIES",
    "MONTH",
    "WEEK",
    "AppPolicy",
    "CapConfig",
    "CapRule",
    "ValueEvent",
]

WEEK = 7 * 86_400
MONTH = 30 * 86_400

MARKETING = "marketing"
"""The default category of a campaign; every app has it."""

BUILTIN_CATEGORIES = (MARKETING, TRANSACTIONAL)
"""Categories every app has, whatever it declares."""

MAX_CATEGORIES = 32
"""Most categories one app may declare (the consent of each user holds one flag per category)."""

MAX_CAP_DAYS = 366.0
"""Longest cap window, in days."""

_EVENT_NAME = re.compile(r"^[^\x00-\x1f\"]{1,64}$")


@dataclass(frozen=True, slots=True)
class CapRule:
    """At most ``limit`` marketing messages within the last ``window_s`` seconds."""

    limit: int
    window_s: int

    def __str__(self) -> str:
        days = self.window_s / 86_400
        return f"{self.limit} per {days:g} days"


DEFAULT_TIER_CAPS: Mapping[Tier, CapRule] = MappingProxyType(
    {
        Tier.HIGH_VALUE: CapRule(4, WEEK),
        Tier.POTENTIAL: CapRule(3, WEEK),
        Tier.BASIC: CapRule(2, WEEK),
        Tier.DORMANT: CapRule(2, MONTH),
    }
)

DEFAULT_LIFECYCLE_CAPS: Mapping[Lifecycle, CapRule] = MappingProxyType(
    {
        Lifecycle.ACTIVE: CapRule(4, WEEK),
        Lifecycle.DORMANT: CapRule(2, MONTH),
        Lifecycle.CHURNED: CapRule(1, MONTH),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CapConfig:
    """Cap tables of one app; categories in ``bypass`` are neither capped nor counted.

    ``min_gap_s``: at least this long between two marketing messages to one user (None: no
    gap beyond the caps).
    """

    tier_caps: Mapping[Tier, CapRule] = field(default_factory=lambda: DEFAULT_TIER_CAPS)
    lifecycle_caps: Mapping[Lifecycle, CapRule] = field(
        default_factory=lambda: DEFAULT_LIFECYCLE_CAPS
    )
    bypass: frozenset[str] = frozenset({TRANSACTIONAL})
    min_gap_s: int | None = None


DEFAULT_CAPS = CapConfig()


@dataclass(frozen=True, slots=True)
class ValueEvent:
    """The event that counts as a purchase, and its property holding the money value."""

    name: str = DEFAULT_PURCHASE_EVENT
    amount: str = DEFAULT_AMOUNT_PROP


DEFAULT_VALUE_EVENT = ValueEvent()

# Thresholds as the settings document names them: key -> (Thresholds field, unit in seconds;
# 0 = a count or an amount of money).
_THRESHOLDS: Mapping[str, tuple[str, float]] = MappingProxyType(
    {
        "new_for_days": ("new_for_s", DAY),
        "dormant_after_days": ("dormant_after_s", DAY),
        "churned_after_days": ("churned_after_s", DAY),
        "hot_days": ("hot_s", DAY),
        "cold_days": ("cold_s", DAY),
        "high_count": ("high_count", 0),
        "high_total": ("high_total", 0),
        "potential_count": ("potential_count", 0),
        "potential_total": ("potential_total", 0),
    }
)
_ORDERED = (
    ("dormant_after_days", "churned_after_days"),
    ("hot_days", "cold_days"),
    ("potential_count", "high_count"),
    ("potential_total", "high_total"),
)  # (lower, higher) pairs of thresholds
_KEYS = frozenset({"categories", "value_event", "caps", "thresholds"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AppPolicy:
    """Everything about targeting and capping an app may set; see the module docstring."""

    caps: CapConfig = DEFAULT_CAPS
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    value_event: ValueEvent = DEFAULT_VALUE_EVENT
    categories: tuple[str, ...] = BUILTIN_CATEGORIES
    """The app's message categories, the built-in ones first."""

    def updated(self, data: object) -> AppPolicy:
        """Return this policy with the settings document ``data`` applied.

        Raises:
            InvalidField: naming the key path (``caps.lifecycle.active.limit``) and the problem.
        """
        d = _table(data, "")
        _no_extra(d, _KEYS, "")
        policy = self
        if "categories" in d:
            policy = replace(policy, categories=_categories(d["categories"]))
        if "value_event" in d:
            policy = replace(policy, value_event=_value_event(d["value_event"], self.value_event))
        if "caps" in d:
            policy = replace(policy, caps=_caps(d["caps"], self.caps))
        if "thresholds" in d:
            policy = replace(policy, thresholds=_thresholds(d["thresholds"], self.thresholds))
        return policy

    def to_json(self) -> dict[str, Any]:
        """The whole policy as a settings document (what ``GET /v1/settings`` answers)."""
        caps = self.caps
        th = self.thresholds
        return {
            "categories": list(self.categories),
            "value_event": {"name": self.value_event.name, "amount": self.value_event.amount},
            "caps": {
                "lifecycle": {str(s): _rule_json(caps.lifecycle_caps.get(s)) for s in Lifecycle},
                "tier": {str(t): _rule_json(caps.tier_caps.get(t)) for t in Tier},
                "min_gap_hours": None if caps.min_gap_s is None else _num(caps.min_gap_s / 3600),
            },
            "thresholds": {
                key: _num(getattr(th, name) / unit) if unit else _num(getattr(th, name))
                for key, (name, unit) in _THRESHOLDS.items()
            },
        }

    def check_category(self, category: str, field: str) -> None:
        """Raise :class:`InvalidField` naming ``field`` unless the app has ``category``."""
        if category not in self.categories:
            raise InvalidField(field, f"unknown category {category!r}; this app's categories "
                               f"are {', '.join(self.categories)}")  # fmt: skip


DEFAULT_POLICY = AppPolicy()


# --- validation -------------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _table(data: object, path: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidField(path or "settings", "must be a table (a JSON object)")
    return data


def _no_extra(d: Mapping[str, Any], known: frozenset[str], path: str) -> None:
    extra = sorted(set(d) - known)
    if extra:
        raise InvalidField(_join(path, str(extra[0])),
                           f"unknown key; expected one of {', '.join(sorted(known))}")  # fmt: skip


def _number(value: object, path: str, *, whole: bool = False, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidField(path, f"must be a number, got {value!r}")
    if whole and value != int(value):
        raise InvalidField(path, f"must be a whole number, got {value!r}")
    if positive and value <= 0:
        raise InvalidField(path, f"must be greater than 0, got {value!r}")
    if value < 0:
        raise InvalidField(path, f"must not be negative, got {value!r}")
    return float(value)


def _categories(data: object) -> tuple[str, ...]:
    path = "categories"
    if not isinstance(data, list):
        raise InvalidField(path, "must be a list of category names")
    out = list(BUILTIN_CATEGORIES)
    for i, name in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(name, str) or not CATEGORY_NAME.fullmatch(name):
            raise InvalidField(where, f"{name!r} must be 1-32 of a-z 0-9 _ - (starting a-z)")
        if name in out:
            if name in BUILTIN_CATEGORIES:
                continue  # always there; naming it is harmless
            raise InvalidField(where, f"{name!r} is listed twice")
        out.append(name)
    if len(out) > MAX_CATEGORIES:
        raise InvalidField(path, f"at most {MAX_CATEGORIES} categories (with marketing and "
                           "transactional)")  # fmt: skip
    return tuple(out)


def _value_event(data: object, base: ValueEvent) -> ValueEvent:
    path = "value_event"
    d = _table(data, path)
    _no_extra(d, frozenset({"name", "amount"}), path)
    out = {}
    for key in ("name", "amount"):
        value = d.get(key, getattr(base, key))
        if not isinstance(value, str) or not _EVENT_NAME.match(value):
            raise InvalidField(f"{path}.{key}", f"must be 1-64 characters without control "
                               f"characters or double quotes, got {value!r}")  # fmt: skip
        out[key] = value
    return ValueEvent(out["name"], out["amount"])


def _rule(data: object, path: str) -> CapRule | None:
    if data is None or data == "none":
        return None
    d = _table(data, path)
    _no_extra(d, frozenset({"limit", "days"}), path)
    for key in ("limit", "days"):
        if key not in d:
            raise InvalidField(f"{path}.{key}", 'is required (or write "none" for no cap)')
    limit = _number(d["limit"], f"{path}.limit", whole=True)
    days = _number(d["days"], f"{path}.days")
    if days > MAX_CAP_DAYS:
        raise InvalidField(f"{path}.days", f"must be at most {MAX_CAP_DAYS:g}, got {days:g}")
    return CapRule(int(limit), round(days * DAY))


def _cap_table(
    data: object, path: str, keys: type[Tier] | type[Lifecycle], base: Mapping[Any, CapRule]
) -> Mapping[Any, CapRule]:
    d = _table(data, path)
    _no_extra(d, frozenset(str(k) for k in keys), path)
    table = dict(base)
    for key, value in d.items():
        rule = _rule(value, f"{path}.{key}")
        member = keys(key)
        if rule is None:
            table.pop(member, None)
        else:
            table[member] = rule
    return MappingProxyType(table)


def _caps(data: object, base: CapConfig) -> CapConfig:
    path = "caps"
    d = _table(data, path)
    _no_extra(d, frozenset({"lifecycle", "tier", "min_gap_hours"}), path)
    caps = base
    if "lifecycle" in d:
        table = _cap_table(d["lifecycle"], f"{path}.lifecycle", Lifecycle, base.lifecycle_caps)
        caps = replace(caps, lifecycle_caps=table)
    if "tier" in d:
        caps = replace(caps, tier_caps=_cap_table(d["tier"], f"{path}.tier", Tier, base.tier_caps))
    if "min_gap_hours" in d:
        gap = d["min_gap_hours"]
        gap_s = None if gap is None or gap == "none" else _number(gap, f"{path}.min_gap_hours")
        caps = replace(caps, min_gap_s=None if gap_s is None else round(gap_s * 3600))
    return caps


def _thresholds(data: object, base: Thresholds) -> Thresholds:
    path = "thresholds"
    d = _table(data, path)
    _no_extra(d, frozenset(_THRESHOLDS), path)
    values: dict[str, float | int] = {}
    for key, value in d.items():
        name, unit = _THRESHOLDS[key]
        count = name.endswith("_count")
        # A user is new for 0 days when the app has no onboarding stage.
        n = _number(value, f"{path}.{key}", whole=count, positive=key != "new_for_days")
        values[name] = int(n) if count else (n * unit if unit else n)
    merged = {f: values.get(f, getattr(base, f)) for f, _ in _THRESHOLDS.values()}
    for low, high in _ORDERED:
        if merged[_THRESHOLDS[low][0]] > merged[_THRESHOLDS[high][0]]:
            bad = low if low in d else high
            raise InvalidField(f"{path}.{bad}", f"{low} must not be above {high}")
    return Thresholds(**merged)  # type: ignore[arg-type]


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 6)


def _rule_json(rule: CapRule | None) -> dict[str, float | int] | str:
    if rule is None:
        return "none"
    return {"limit": rule.limit, "days": _num(rule.window_s / DAY)}
