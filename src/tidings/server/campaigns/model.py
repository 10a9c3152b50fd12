"""Campaigns as frozen values, their JSON form, and the reasons behind every delivery decision.

A campaign is data: who (a segment tree), what (content templates, variants, a control share),
when (kind, trigger, schedule, send-time policy and window), how often (frequency caps and a
total budget) and what counts as success (a conversion event). :meth:`Campaign.from_json`
validates everything and raises :class:`CampaignError` naming the offending field, e.g.
``content.actions[2].url: longer than 2048 characters``. Templates are parsed and checked by
:func:`tidings.server.campaigns.templates.validate_content` at creation as well.

JSON shape (all but ``id``, ``app``, ``name``, ``kind`` and ``content`` optional)::

    {"id": "spring-sale", "app": "shop", "name": "Spring sale", "kind": "triggered",
     "status": "draft",
     "segment": {"tag": "sports_fan"}            # or the text form: "tag:sports_fan and ..."
     "content": {"kind": "banner", "title": "Hi {{ user.first_name | default('there') }}",
                 "body": "...", "image_url": "https://...",
                 "actions": [{"id": "open", "label": "Open", "url": "shop://sale"}],
                 "data": {"sku": "{{ event.item | default('') }}"},
                 "category": "marketing", "priority": "normal", "ttl_s": 3600,
                 "collapse_key": "sale"},
     "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1,
                                               "content": {"title": "Sale!"}}],
     "control_share": 0.1,
     "trigger": {"event": "add_to_cart", "where": [{"prop": "price", "op": "ge", "value": 50}],
                 "unless": {"event": "purchase", "within_s": 3600},
                 "delay_s": 3600, "window": {"start_at": 1700000000, "end_at": 1710000000}},
     "frequency": {"per_user_limit": 1, "per_user_window_s": 604800, "total_budget": 10000},
     "schedule": {"at": 1700000000}              # or {"local_time": "09:30", "not_before": ...}
     "send_time": {"policy": "best_time", "default_hour": 19,
                   "window": {"start": "09:00", "end": "21:00"}},
     "conversion": {"event": "purchase", "where": {"sku": "x"}, "window_s": 259200},
     "min_sample_per_variant": 1000,
     "rollout": {"test_share": 0.2, "decide_after_s": 86400, "check_every_s": 300,
                 "at_deadline": "best"}}

``conversion.where`` is a list of property filters (as in ``trigger.where``) or an object of
equalities (``{"sku": "x"}`` is ``[{"prop": "sku", "op": "eq", "value": "x"}]``);
``conversion.window_s`` defaults to :data:`DEFAULT_CONVERSION_WINDOW_S`. See
:class:`Rollout` for the roll-out and :mod:`tidings.server.campaigns.stats` for what the
settings measure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tidings.protocol import codes, kinds, limits
from tidings.protocol.errors import TidingsError
from tidings.protocol.frames import CATEGORIES, CATEGORY_NAME
from tidings.protocol.kinds import KindName
from tidings.server.campaigns.sendtime import (
    DEFAULT_SEND_HOUR,
    SendPolicy,
    SendWindow,
    parse_hhmm,
)
from tidings.server.targeting.profiles import TRANSACTIONAL
from tidings.server.targeting.segments import (
    AllOf,
    Node,
    PropFilter,
    SegmentError,
    SegmentSyntaxError,
    filter_from_json,
    filter_to_json,
    parse,
)
from tidings.server.targeting.segments import from_json as segment_from_json
from tidings.server.targeting.segments import to_json as segment_to_json

__all__ = [
    "CONTROL",
    "DEFAULT_CONVERSION_WINDOW_S",
    "DEFAULT_MIN_SAMPLE",
    "MAX_VARIANTS",
    "TRANSITIONS",
    "Action",
    "Campaign",
    "CampaignError",
    "CampaignKind",
    "CampaignStatus",
    "Category",
    "Content",
    "Conversion",
    "Decision",
    "Frequency",
    "Overflow",
    "Priority",
    "Reason",
    "Rollout",
    "RolloutFallback",
    "Schedule",
    "SendTime",
    "TimeWindow",
    "Trigger",
    "Unless",
    "Variant",
]

CONTROL = "control"
"""Name of the holdout group; no variant may use it."""


MAX_VARIANTS = 10
"""Most variants in one A/B test."""

DEFAULT_CONVERSION_WINDOW_S = 3 * 86_400
"""A conversion counts when it follows the exposure within three days, unless the campaign says
otherwise."""

DEFAULT_MIN_SAMPLE = 1_000
"""Fewest exposures (displays or inbox reads) each variant needs before a winner may be declared,
unless the campaign sets ``min_sample_per_variant``."""

DEFAULT_ROLLOUT_CHECK_S = 300
"""How often a roll-out in its test phase looks for a winner, unless it says otherwise."""

MAX_CONTROL_SHARE = 0.9
"""Largest holdout share (a campaign that reaches nobody is a mistake)."""

MAX_TTL_S = 90 * 86_400
"""Longest message lifetime."""

MAX_DELAY_S = 30 * 86_400
"""Longest trigger delay."""

_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_EVERYONE: Node = AllOf(())


class CampaignError(TidingsError):
    """A campaign definition that is not valid; ``field`` names the offending JSON field."""

    code = codes.ERR_INVALID_FIELD

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class CampaignKind(StrEnum):
    """When a campaign runs."""

    ONE_OFF = "one_off"
    SCHEDULED = "scheduled"
    TRIGGERED = "triggered"


class CampaignStatus(StrEnum):
    """Where a campaign is in its life."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


TRANSITIONS: Mapping[CampaignStatus, frozenset[CampaignStatus]] = MappingProxyType({
    CampaignStatus.RUNNING: frozenset({CampaignStatus.DRAFT, CampaignStatus.PAUSED}),
    CampaignStatus.PAUSED: frozenset({CampaignStatus.RUNNING}),
    CampaignStatus.CANCELLED: frozenset(
        {CampaignStatus.DRAFT, CampaignStatus.RUNNING, CampaignStatus.PAUSED}
    ),
    CampaignStatus.COMPLETED: frozenset({CampaignStatus.RUNNING}),
})  # fmt: skip
"""Every legal status change: target status -> the statuses it may come from."""


class Category(StrEnum):
    """Message category, as on the wire; transactional bypasses marketing caps and opt-outs."""

    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


class Overflow(StrEnum):
    """Rendered copy longer than the app's limit: skip the user, or cut it with an ellipsis."""

    SKIP = "skip"
    TRUNCATE = "truncate"


class Priority(StrEnum):
    """Delivery priority, as on the wire (urgent transactional messages may bypass quiet hours)."""

    NORMAL = "normal"
    URGENT = "urgent"


class Reason(StrEnum):
    """Why a user did or did not get a campaign's message (the decision log)."""

    SENT = "sent"
    SCHEDULED = "scheduled"
    NOT_IN_SEGMENT = "not_in_segment"
    OPTED_OUT = "opted_out"
    CAPPED_TIER = "capped_tier"
    CAPPED_LIFECYCLE = "capped_lifecycle"
    CAPPED_CAMPAIGN = "capped_campaign"
    CAPPED_GAP = "capped_gap"
    HOLDOUT = "holdout"
    BUDGET_EXHAUSTED = "budget_exhausted"
    OUTSIDE_SEND_WINDOW = "outside_send_window"
    OUTSIDE_TRIGGER_WINDOW = "outside_trigger_window"
    TRIGGER_FILTER = "trigger_filter"
    NOT_TRIGGERED = "not_triggered"  # only ever said when asked, never logged
    NO_DEVICE = "no_device"  # a banner-only message to a user with no device yet
    UNLESS_MATCHED = "unless_matched"
    CAMPAIGN_INACTIVE = "campaign_inactive"
    TEMPLATE_ERROR = "template_error"
    TOO_LARGE = "too_large"
    EXPIRED = "expired"
    COLLAPSED = "collapsed"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check: allowed or not, and why."""

    allowed: bool
    reason: Reason
    detail: str = ""


# --- small values ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """A button or deep link on a message; ``label`` and ``url`` are templates."""

    id: str
    label: str
    url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Content:
    """What a message says; the text fields and ``data`` values are templates."""

    kind: KindName = "banner"
    """Where the message shows (:mod:`tidings.protocol.kinds`)."""
    title: str = ""
    body: str = ""
    image_url: str | None = None
    actions: tuple[Action, ...] = ()
    data: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    category: Category | str = Category.MARKETING
    """``marketing``, ``transactional`` or a category the app declares (the engine checks
    which; see :class:`~tidings.server.policy.AppPolicy`)."""
    priority: Priority = Priority.NORMAL
    ttl_s: int | None = None
    """Seconds the message lives; None: the app's lifetime for the kind (``banner_ttl_s`` for
    the kinds shown only as an overlay, ``inbox_ttl_s`` for those kept in the inbox)."""
    collapse_key: str | None = None
    overflow: Overflow = Overflow.SKIP
    """What to do when the rendered title or body is longer than the app allows."""

    @property
    def transactional(self) -> bool:
        """True for transactional messages, which bypass marketing caps and opt-outs."""
        return self.category == TRANSACTIONAL


_OVERRIDABLE = ("title", "body", "image_url", "actions", "data")


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of an A/B test: a weight and content overrides on top of the campaign content."""

    name: str
    weight: float
    overrides: Mapping[str, Any]
    content: Content


@dataclass(frozen=True, slots=True)
class Unless:
    """Cancel a pending triggered message if ``event`` (matching ``where``) follows in time."""

    event: str
    within_s: int
    where: tuple[PropFilter, ...] = ()


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Absolute ``[start_at, end_at)`` in unix seconds; either end may be open."""

    start_at: float | None = None
    end_at: float | None = None

    def contains(self, t: float) -> bool:
        """Return True when ``t`` is inside the window."""
        return (self.start_at is None or t >= self.start_at) and (
            self.end_at is None or t < self.end_at
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Trigger:
    """Trigger behaviour (event + filter, unless) and trigger time (delay, absolute window)."""

    event: str
    where: tuple[PropFilter, ...] = ()
    unless: Unless | None = None
    delay_s: int = 0
    window: TimeWindow | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Frequency:
    """Per-user limit (within a window, or for ever) and a total budget of messages."""

    per_user_limit: int | None = None
    per_user_window_s: int | None = None
    total_budget: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """When a scheduled campaign runs: at ``at``, or at ``local_time`` on each user's clock."""

    at: float | None = None
    local_time: int | None = None  # minute of day
    not_before: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendTime:
    """Per-user send-time policy; see :mod:`tidings.server.campaigns.sendtime`."""

    policy: SendPolicy = SendPolicy.IMMEDIATE
    at: float | None = None
    local_time: int | None = None
    default_hour: int = DEFAULT_SEND_HOUR
    window: SendWindow | None = None


@dataclass(frozen=True, slots=True)
class Conversion:
    """The event (with properties matching ``where``) that counts as a conversion.

    It counts when it follows the exposure (display or inbox read; for the holdout, the
    decision that held the user out) within ``window_s``.
    """

    event: str
    window_s: int = DEFAULT_CONVERSION_WINDOW_S
    where: tuple[PropFilter, ...] = ()


class RolloutFallback(StrEnum):
    """What a roll-out sends to the rest of the audience when no winner is declared in time."""

    BEST = "best"
    """The variant with the best observed rate (the first in order on a tie)."""
    BASE = "base"
    """The campaign's base content (no variant)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollout:
    """Test on a share of the audience, then send the winner to the rest.

    Users whose roll-out bucket is below ``test_share`` form the test group: they get the
    variants as usual. The rest wait. Every ``check_every_s`` the scheduler looks for a winner;
    when there is one (or ``decide_after_s`` after the test started, ``at_deadline`` chooses) the
    choice is stored once and the rest get that variant, through caps and consent at that time.
    """

    test_share: float
    decide_after_s: int
    check_every_s: int = DEFAULT_ROLLOUT_CHECK_S
    at_deadline: RolloutFallback = RolloutFallback.BEST


@dataclass(frozen=True, slots=True, kw_only=True)
class Campaign:
    """A campaign; build one with :meth:`from_json`, which validates every field."""

    id: str
    app: str
    name: str
    kind: CampaignKind
    status: CampaignStatus = CampaignStatus.DRAFT
    segment: Node = _EVERYONE
    content: Content
    variants: tuple[Variant, ...] = ()
    control_share: float = 0.0
    trigger: Trigger | None = None
    frequency: Frequency = Frequency()
    schedule: Schedule | None = None
    send_time: SendTime = SendTime()
    conversion: Conversion | None = None
    """The goal; None: the app's value event (see :attr:`measured`)."""
    measured: bool = True
    """False when the campaign turned conversion off (``"conversion": null``): then it has no
    goal at all; absent, it is measured against the app's value event by default."""
    min_sample_per_variant: int = DEFAULT_MIN_SAMPLE
    rollout: Rollout | None = None

    def content_for(self, variant: str | None) -> Content:
        """Return the content of ``variant`` (the base content for None or an unknown name)."""
        for v in self.variants:
            if v.name == variant:
                return v.content
        return self.content

    def with_status(self, status: CampaignStatus) -> Campaign:
        """Return a copy with another status."""
        return replace(self, status=status)

    @classmethod
    def from_json(cls, data: object) -> Campaign:
        """Build a campaign from its JSON form; raise :class:`CampaignError` naming the field."""
        return _campaign(_obj(data, "$", _CAMPAIGN_KEYS))

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (the inverse of :meth:`from_json`)."""
        out: dict[str, Any] = {
            "id": self.id,
            "app": self.app,
            "name": self.name,
            "kind": str(self.kind),
            "status": str(self.status),
            "segment": segment_to_json(self.segment),
            "content": _content_json(self.content),
        }
        if self.variants:
            out["variants"] = [
                {"name": v.name, "weight": v.weight}
                | ({"content": _overrides_json(v.overrides)} if v.overrides else {})
                for v in self.variants
            ]
        if self.control_share:
            out["control_share"] = self.control_share
        if self.trigger is not None:
            out["trigger"] = _trigger_json(self.trigger)
        freq = _drop_none(
            per_user_limit=self.frequency.per_user_limit,
            per_user_window_s=self.frequency.per_user_window_s,
            total_budget=self.frequency.total_budget,
        )
        if freq:
            out["frequency"] = freq
        if self.schedule is not None:
            s = self.schedule
            out["schedule"] = _drop_none(
                at=s.at,
                local_time=None if s.local_time is None else _hhmm(s.local_time),
                not_before=s.not_before,
            )
        st = self.send_time
        out["send_time"] = _drop_none(
            policy=str(st.policy),
            at=st.at,
            local_time=None if st.local_time is None else _hhmm(st.local_time),
            default_hour=st.default_hour,
            window=None if st.window is None else st.window.to_json(),
        )
        if self.conversion is not None:
            c = self.conversion
            out["conversion"] = {"event": c.event, "window_s": c.window_s} | _where_json(c.where)
        elif not self.measured:
            out["conversion"] = None
        if self.min_sample_per_variant != DEFAULT_MIN_SAMPLE:
            out["min_sample_per_variant"] = self.min_sample_per_variant
        if self.rollout is not None:
            r = self.rollout
            out["rollout"] = {
                "test_share": r.test_share,
                "decide_after_s": r.decide_after_s,
                "check_every_s": r.check_every_s,
                "at_deadline": str(r.at_deadline),
            }
        return out


# --- JSON reading ------------------------------------------------------------------------------

_CAMPAIGN_KEYS = frozenset(
    {
        "id", "app", "name", "kind", "status", "segment", "content", "variants",
        "control_share", "trigger", "frequency", "schedule", "send_time", "conversion",
        "min_sample_per_variant", "rollout",
    }
)  # fmt: skip
_CONTENT_KEYS = frozenset(
    {
        "kind", "title", "body", "image_url", "actions", "data", "category", "priority",
        "ttl_s", "collapse_key", "overflow",
    }
)  # fmt: skip


def _obj(data: object, path: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise CampaignError(path, "must be an object")
    extra = sorted(k for k in data if k not in allowed)
    if extra:
        raise CampaignError(_join(path, str(extra[0])), "unknown field")
    return data


def _join(path: str, key: str) -> str:
    return key if path == "$" else f"{path}.{key}"


def _str(
    data: Mapping[str, Any],
    key: str,
    path: str,
    *,
    default: str | None = None,
    max_len: int = limits.MAX_NAME_LEN,
    allow_empty: bool = False,
) -> str:
    where = _join(path, key)
    v = data.get(key, default)
    if not isinstance(v, str):
        raise CampaignError(where, "must be a string" if key in data else "is required")
    if not v and not allow_empty:
        raise CampaignError(where, "must not be empty")
    if len(v) > max_len:
        raise CampaignError(where, f"longer than {max_len} characters")
    return v


def _opt_str(data: Mapping[str, Any], key: str, path: str, max_len: int) -> str | None:
    if data.get(key) is None:
        return None
    return _str(data, key, path, max_len=max_len)


def _int(
    data: Mapping[str, Any], key: str, path: str, lo: int, hi: int, default: int | None = None
) -> int | None:
    v = data.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise CampaignError(_join(path, key), f"must be a whole number in {lo}..{hi}")
    return v


def _time(data: Mapping[str, Any], key: str, path: str) -> float | None:
    v = data.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= limits.MAX_INT:
        raise CampaignError(_join(path, key), "must be a unix time in seconds")
    return v


def _enum(data: Mapping[str, Any], key: str, path: str, enum: type[Any], default: Any) -> Any:
    v = data.get(key, default)
    try:
        return enum(v)
    except ValueError:
        choices = ", ".join(str(e) for e in enum)
        raise CampaignError(_join(path, key), f"must be one of {choices}") from None


def _hhmm_field(data: Mapping[str, Any], key: str, path: str) -> int | None:
    v = data.get(key)
    if v is None:
        return None
    try:
        return parse_hhmm(v)
    except ValueError:
        raise CampaignError(_join(path, key), "must be a time of day HH:MM") from None


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _where(data: Mapping[str, Any], path: str) -> tuple[PropFilter, ...]:
    raw = data.get("where", [])
    where_path = _join(path, "where")
    if not isinstance(raw, list) or len(raw) > 16:
        raise CampaignError(where_path, "must be a list of at most 16 filters")
    try:
        return tuple(filter_from_json(f, f"{where_path}[{i}]") for i, f in enumerate(raw))
    except SegmentError as e:
        raise CampaignError(e.path, e.problem) from None


def _segment(data: object) -> Node:
    try:
        if data is None:
            return AllOf(())
        if isinstance(data, str):
            return parse(data)
        return segment_from_json(data)
    except SegmentSyntaxError as e:
        error = CampaignError("segment", e.problem)
        error.reason = e.under("segment: ")  # the caret stays under the fault
        error.args = (error.reason,)
        raise error from None
    except SegmentError as e:
        path = "segment" if e.path == "$" else "segment" + e.path[1:]
        raise CampaignError(path, str(e) if e.path == "$" else e.problem) from None


def _content(data: object, path: str) -> Content:
    d = _obj(data, path, _CONTENT_KEYS)
    kind = d.get("kind", "banner")
    if kind not in kinds.KINDS:
        raise CampaignError(_join(path, "kind"), f"must be one of {', '.join(kinds.NAMES)}")
    title = _str(d, "title", path, default="", max_len=limits.MAX_TITLE_LEN, allow_empty=True)
    body = _str(d, "body", path, default="", max_len=limits.MAX_BODY_LEN, allow_empty=True)
    if not title and not body:
        raise CampaignError(_join(path, "body"), "a message needs a title or a body")
    return Content(
        kind=kind,
        title=title,
        body=body,
        image_url=_opt_str(d, "image_url", path, limits.MAX_URL_LEN),
        actions=_actions(d.get("actions", []), _join(path, "actions"), kinds.KINDS[kind]),
        data=_data(d.get("data", {}), _join(path, "data")),
        category=_category(d, path),
        priority=_enum(d, "priority", path, Priority, "normal"),
        ttl_s=_int(d, "ttl_s", path, 1, MAX_TTL_S),
        collapse_key=_opt_str(d, "collapse_key", path, limits.MAX_ID_LEN),
        overflow=_enum(d, "overflow", path, Overflow, "skip"),
    )


def _category(d: Mapping[str, Any], path: str) -> Category | str:
    value = d.get("category", "marketing")
    if not isinstance(value, str) or not CATEGORY_NAME.fullmatch(value):
        raise CampaignError(_join(path, "category"), "must be a category name (1-32 of a-z 0-9 "
                            f"_ -, starting with a letter), got {value!r}")  # fmt: skip
    return Category(value) if value in CATEGORIES else value


def _actions(data: object, path: str, kind: kinds.KindRules) -> tuple[Action, ...]:
    if not isinstance(data, list):
        raise CampaignError(path, "must be a list")
    if len(data) > kind.max_actions:
        raise CampaignError(path, f"at most {kind.max_actions} actions for kind {kind.name!r}")
    out = []
    seen = set()
    for i, raw in enumerate(data):
        p = f"{path}[{i}]"
        a = _obj(raw, p, frozenset({"id", "label", "url"}))
        action = Action(
            id=_str(a, "id", p, max_len=limits.MAX_ID_LEN),
            label=_str(a, "label", p, max_len=limits.MAX_NAME_LEN),
            url=_str(a, "url", p, max_len=limits.MAX_URL_LEN),
        )
        if action.id in seen:
            raise CampaignError(f"{p}.id", "duplicate action id")
        seen.add(action.id)
        out.append(action)
    return tuple(out)


def _data(data: object, path: str) -> Mapping[str, str]:
    if not isinstance(data, dict):
        raise CampaignError(path, "must be an object of strings")
    if len(data) > limits.MAX_KEYS:
        raise CampaignError(path, f"at most {limits.MAX_KEYS} keys")
    for k, v in data.items():
        if not isinstance(k, str) or not k or len(k) > limits.MAX_NAME_LEN:
            raise CampaignError(path, f"bad key {k!r}")
        if not isinstance(v, str) or len(v) > limits.MAX_TEXT_LEN:
            raise CampaignError(f"{path}.{k}", "must be a string (a template)")
    return MappingProxyType(dict(data))


def _variants(data: object, base: Content, base_json: dict[str, Any]) -> tuple[Variant, ...]:
    if not isinstance(data, list):
        raise CampaignError("variants", "must be a list")
    if len(data) > MAX_VARIANTS:
        raise CampaignError("variants", f"at most {MAX_VARIANTS} variants")
    out = []
    names = set()
    for i, raw in enumerate(data):
        p = f"variants[{i}]"
        v = _obj(raw, p, frozenset({"name", "weight", "content"}))
        name = _str(v, "name", p)
        if name == CONTROL:
            raise CampaignError(f"{p}.name", f"{CONTROL!r} is reserved for the holdout group")
        if name in names:
            raise CampaignError(f"{p}.name", "duplicate variant name")
        names.add(name)
        weight = v.get("weight", 1)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise CampaignError(f"{p}.weight", "must be a positive number")
        overrides = _obj(v.get("content", {}), f"{p}.content", frozenset(_OVERRIDABLE))
        content = _content(base_json | overrides, f"{p}.content") if overrides else base
        out.append(Variant(name, float(weight), MappingProxyType(dict(overrides)), content))
    return tuple(out)


def _trigger(data: object) -> Trigger:
    p = "trigger"
    d = _obj(data, p, frozenset({"event", "where", "unless", "delay_s", "window"}))
    unless = None
    if d.get("unless") is not None:
        up = "trigger.unless"
        u = _obj(d["unless"], up, frozenset({"event", "within_s", "where"}))
        within = _int(u, "within_s", up, 1, MAX_DELAY_S)
        if within is None:
            raise CampaignError(f"{up}.within_s", "is required")
        unless = Unless(_str(u, "event", up), within, _where(u, up))
    window = None
    if d.get("window") is not None:
        wp = "trigger.window"
        w = _obj(d["window"], wp, frozenset({"start_at", "end_at"}))
        window = TimeWindow(_time(w, "start_at", wp), _time(w, "end_at", wp))
        start, end = window.start_at, window.end_at
        if start is not None and end is not None and end <= start:
            raise CampaignError(f"{wp}.end_at", "must be after start_at")
    return Trigger(
        event=_str(d, "event", p),
        where=_where(d, p),
        unless=unless,
        delay_s=_int(d, "delay_s", p, 0, MAX_DELAY_S, default=0) or 0,
        window=window,
    )


def _campaign(d: dict[str, Any]) -> Campaign:
    cid = _str(d, "id", "$")
    if not _ID.fullmatch(cid):
        raise CampaignError("id", "use letters, digits, '_', '.' and '-' only")
    kind = _enum(d, "kind", "$", CampaignKind, None)
    content_raw = d.get("content")
    if content_raw is None:
        raise CampaignError("content", "is required")
    content = _content(content_raw, "content")
    variants = _variants(d.get("variants", []), content, content_raw)
    share = d.get("control_share", 0.0)
    if (
        isinstance(share, bool)
        or not isinstance(share, int | float)
        or not 0 <= share <= MAX_CONTROL_SHARE
    ):
        raise CampaignError("control_share", f"must be a number in 0..{MAX_CONTROL_SHARE}")

    trigger = None if d.get("trigger") is None else _trigger(d["trigger"])
    if kind is CampaignKind.TRIGGERED and trigger is None:
        raise CampaignError("trigger", "is required for a triggered campaign")
    if kind is not CampaignKind.TRIGGERED and trigger is not None:
        raise CampaignError("trigger", "only a triggered campaign has a trigger")

    schedule = None
    if d.get("schedule") is not None:
        sd = _obj(d["schedule"], "schedule", frozenset({"at", "local_time", "not_before"}))
        schedule = Schedule(
            at=_time(sd, "at", "schedule"),
            local_time=_hhmm_field(sd, "local_time", "schedule"),
            not_before=_time(sd, "not_before", "schedule"),
        )
        if (schedule.at is None) == (schedule.local_time is None):
            raise CampaignError("schedule", "needs exactly one of 'at' and 'local_time'")
    if kind is CampaignKind.SCHEDULED and schedule is None:
        raise CampaignError("schedule", "is required for a scheduled campaign")
    if kind is not CampaignKind.SCHEDULED and schedule is not None:
        raise CampaignError("schedule", "only a scheduled campaign has a schedule")

    fd = _obj(d.get("frequency", {}), "frequency", frozenset(
        {"per_user_limit", "per_user_window_s", "total_budget"}
    ))  # fmt: skip
    frequency = Frequency(
        per_user_limit=_int(fd, "per_user_limit", "frequency", 1, 10_000),
        per_user_window_s=_int(fd, "per_user_window_s", "frequency", 60, 366 * 86_400),
        total_budget=_int(fd, "total_budget", "frequency", 1, limits.MAX_INT),
    )
    if frequency.per_user_window_s is not None and frequency.per_user_limit is None:
        raise CampaignError("frequency.per_user_limit", "is required with per_user_window_s")

    sp = "send_time"
    sd2 = _obj(d.get(sp, {}), sp, frozenset(
        {"policy", "at", "local_time", "default_hour", "window"}
    ))  # fmt: skip
    window = None
    if sd2.get("window") is not None:
        wd = _obj(sd2["window"], f"{sp}.window", frozenset({"start", "end"}))
        start = _hhmm_field(wd, "start", f"{sp}.window")
        end = _hhmm_field(wd, "end", f"{sp}.window")
        if start is None or end is None or start == end:
            raise CampaignError(f"{sp}.window", "needs different 'start' and 'end' times HH:MM")
        window = SendWindow(start, end)
    send_time = SendTime(
        policy=_enum(sd2, "policy", sp, SendPolicy, "immediate"),
        at=_time(sd2, "at", sp),
        local_time=_hhmm_field(sd2, "local_time", sp),
        default_hour=_int(sd2, "default_hour", sp, 0, 23, default=DEFAULT_SEND_HOUR) or 0,
        window=window,
    )
    if send_time.policy is SendPolicy.FIXED and send_time.at is None:
        raise CampaignError(f"{sp}.at", "is required for the fixed policy")
    if send_time.policy is SendPolicy.USER_LOCAL and send_time.local_time is None:
        raise CampaignError(f"{sp}.local_time", "is required for the user_local policy")

    conversion = None
    if d.get("conversion") is not None:
        cp = "conversion"
        cd = _obj(d[cp], cp, frozenset({"event", "window_s", "where"}))
        window_s = _int(cd, "window_s", cp, 60, 90 * 86_400, default=DEFAULT_CONVERSION_WINDOW_S)
        assert window_s is not None
        where = (
            _equalities(cd["where"], f"{cp}.where")
            if isinstance(cd.get("where"), dict)
            else _where(cd, cp)
        )
        conversion = Conversion(_str(cd, "event", cp), window_s, where)

    min_sample = _int(d, "min_sample_per_variant", "$", 1, limits.MAX_INT,
                      default=DEFAULT_MIN_SAMPLE)  # fmt: skip
    assert min_sample is not None
    rollout = None if d.get("rollout") is None else _rollout(d["rollout"], variants)

    return Campaign(
        id=cid,
        app=_str(d, "app", "$", max_len=64),
        name=_str(d, "name", "$", max_len=200),
        kind=kind,
        status=_enum(d, "status", "$", CampaignStatus, "draft"),
        segment=_segment(d.get("segment")),
        content=content,
        variants=variants,
        control_share=float(share),
        trigger=trigger,
        frequency=frequency,
        schedule=schedule,
        send_time=send_time,
        conversion=conversion,
        measured=conversion is not None or "conversion" not in d,
        min_sample_per_variant=min_sample,
        rollout=rollout,
    )


def _equalities(data: dict[str, Any], path: str) -> tuple[PropFilter, ...]:
    """``{"sku": "x", "paid": true}``: each property must equal its value."""
    if len(data) > 16:
        raise CampaignError(path, "at most 16 properties")
    try:
        return tuple(
            filter_from_json({"prop": k, "op": "eq", "value": v}, f"{path}.{k}")
            for k, v in data.items()
        )
    except SegmentError as e:
        where = e.path.rsplit(".", 1)[0] if e.path.endswith((".value", ".op")) else e.path
        raise CampaignError(where, e.problem) from None


def _rollout(data: object, variants: tuple[Variant, ...]) -> Rollout:
    p = "rollout"
    d = _obj(data, p, frozenset({"test_share", "decide_after_s", "check_every_s", "at_deadline"}))
    if len(variants) < 2:
        raise CampaignError(p, "a roll-out needs at least two variants to test")
    share = d.get("test_share")
    if share is None:
        raise CampaignError(f"{p}.test_share", "is required")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
        raise CampaignError(f"{p}.test_share", "must be a number between 0 and 1 (exclusive)")
    decide = _int(d, "decide_after_s", p, 60, MAX_DELAY_S)
    if decide is None:
        raise CampaignError(f"{p}.decide_after_s", "is required")
    check = _int(d, "check_every_s", p, 1, MAX_DELAY_S, default=DEFAULT_ROLLOUT_CHECK_S)
    assert check is not None
    return Rollout(
        test_share=float(share),
        decide_after_s=decide,
        check_every_s=check,
        at_deadline=_enum(d, "at_deadline", p, RolloutFallback, "best"),
    )


# --- JSON writing ------------------------------------------------------------------------------


def _drop_none(**kv: Any) -> dict[str, Any]:
    return {k: v for k, v in kv.items() if v is not None}


def _where_json(where: tuple[PropFilter, ...]) -> dict[str, Any]:
    return {"where": [filter_to_json(f) for f in where]} if where else {}


def _content_json(c: Content) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": str(c.kind), "title": c.title, "body": c.body}
    if c.image_url is not None:
        out["image_url"] = c.image_url
    if c.actions:
        out["actions"] = [{"id": a.id, "label": a.label, "url": a.url} for a in c.actions]
    if c.data:
        out["data"] = dict(c.data)
    out.update(category=str(c.category), priority=str(c.priority))
    if c.overflow is not Overflow.SKIP:
        out["overflow"] = str(c.overflow)
    return out | _drop_none(ttl_s=c.ttl_s, collapse_key=c.collapse_key)


def _overrides_json(o: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in o.items()}


def _trigger_json(t: Trigger) -> dict[str, Any]:
    out: dict[str, Any] = {"event": t.event} | _where_json(t.where)
    if t.unless is not None:
        u = t.unless
        out["unless"] = {"event": u.event, "within_s": u.within_s} | _where_json(u.where)
    if t.delay_s:
        out["delay_s"] = t.delay_s
    if t.window is not None:
        out["window"] = _drop_none(start_at=t.window.start_at, end_at=t.window.end_at)
    return out
