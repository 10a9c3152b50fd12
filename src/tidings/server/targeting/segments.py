"""Segments: a JSON expression tree over profiles, its readable text form, and evaluation.

A segment is a tree of frozen nodes. The JSON form (admin API, storage) has one discriminating
key per node; the text form (CLI, TUI composer) parses to the very same tree, and
:func:`to_text` prints the canonical text, so ``parse(to_text(t)) == t`` for every valid tree.

JSON form::

    {"all": [node, ...]}    {"any": [node, ...]}    {"not": node}      {"all": []} = everyone
    {"attr": "region", "op": "eq", "value": "CN-SH"}         free-form profile attribute
    {"field": "app_version", "op": "ge", "value": "2.3"}     locale | tz | platform | app_version
    {"tag": "sports_fan"}                                     {"consent": "marketing"}
    {"lifecycle": ["active", "new"]}                          {"tier": ["high_value"]}
    {"event": "purchase", "agg": "count", "op": "ge", "value": 2, "within_s": 2592000,
     "where": [{"prop": "category", "op": "eq", "value": "shoes"}]}
    {"event": "purchase", "agg": "sum", "prop": "amount", "op": "ge", "value": 100, ...}
    {"last_seen": "within", "seconds": 604800}                or "older_than"

Comparison ops: ``eq ne lt le gt ge in not_in between exists contains`` (values: strings,
numbers, booleans; ``in``/``not_in`` take a list, ``between`` a ``[low, high]`` pair).

Text grammar (keywords are case-insensitive, names and strings are not)::

    segment    := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | primary
    primary    := "(" segment ")" | "everyone"
                | "tag" ":" name | "consent" ":" name
                | ("lifecycle" | "tier") ("=" word | "in" "(" word ("," word)* ")")
                | "attr" "." name comparison
                | ("locale" | "tz" | "platform" | "app_version") comparison
                | "event" name ("count" | "sum" "(" name ")") cmp_op number
                      "within" duration ["where" filters]
                | "last_seen" ("within" | "older" "than") duration
    filters    := filter | "(" filter ("and" filter)* ")"
    filter     := name comparison
    comparison := cmp_op value | ["not"] "in" "(" value ("," value)* ")"
                | "between" value "and" value | "exists" | "contains" value
    cmp_op     := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="
    value      := string | number | "true" | "false" | word      (a bare word is a string)
    name       := word | string
    word       := [A-Za-z_][A-Za-z0-9_-]*
    string     := '"' JSON string body '"'          (JSON escapes: \\" \\\\ \\n \\uXXXX)
    duration   := integer ("s" | "m" | "h" | "d" | "w")          e.g. 30d, 12h

``and`` binds tighter than ``or``; ``not`` tighter than both. The canonical text quotes every
string value, prints names bare when they are words, durations in the largest whole unit of
d/h/m/s, and parentheses only where the tree needs them.

Semantics: a missing (or ``None``) attribute makes every comparison false except ``exists``, so
``not attr.region = "CN-BJ"`` includes users without a region. Booleans never equal numbers.
``lifecycle`` and ``tier`` read the values stored on the profile, which a scheduler keeps current
(see :func:`tidings.server.targeting.lifecycle.next_change_at`). ``app_version`` compares
semver-ishly: ``2.3 == 2.3.0 < 2.3.1``, and ``2.3.0-beta < 2.3.0``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NoReturn, TypeAlias

from tidings.protocol import codes
from tidings.protocol.errors import TidingsError
from tidings.server.targeting.lifecycle import Lifecycle, Tier
from tidings.server.targeting.profiles import Profile, allows

__all__ = [
    "FIELDS",
    "MAX_IN_VALUES",
    "MAX_SEGMENT_DEPTH",
    "MAX_SEGMENT_NODES",
    "MAX_SEGMENT_TEXT",
    "MAX_WINDOW_S",
    "AllOf",
    "AnyOf",
    "Attr",
    "Consent",
    "Event",
    "EventSource",
    "Field",
    "LastSeen",
    "LifecycleIn",
    "Node",
    "Not",
    "Op",
    "PropFilter",
    "Scalar",
    "SegmentError",
    "SegmentSyntaxError",
    "Tag",
    "TierIn",
    "Value",
    "compare",
    "equality_key",
    "evaluate",
    "field_value",
    "filter_from_json",
    "filter_to_json",
    "from_json",
    "parse",
    "to_json",
    "to_text",
    "version_key",
    "walk",
]

MAX_SEGMENT_DEPTH = 32
"""Security limit: deepest nesting of all/any/not in one segment."""

MAX_SEGMENT_NODES = 500
"""Security limit: most nodes (conditions and connectives) in one segment."""

MAX_SEGMENT_TEXT = 8_192
"""Security limit: longest segment text the parser accepts, in characters."""

MAX_IN_VALUES = 1_000
"""Security limit: most values in one ``in`` / ``not in`` list."""

MAX_WINDOW_S = 400 * 86_400
"""Longest event window or last-seen duration, in seconds (event retention is shorter)."""

FIELDS = ("locale", "tz", "platform", "app_version")
"""Built-in profile fields a :class:`Field` node may compare."""


class SegmentError(TidingsError):
    """A segment (JSON or text) that is not valid; ``path`` names the JSON path of the fault."""

    code = codes.ERR_INVALID_FIELD

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class SegmentSyntaxError(SegmentError):
    """Segment text that does not parse.

    ``column`` is 1-based; the message shows the text with a caret under the fault::

        tag:vip and attr.region =
                                 ^ expected a value after '='
    """

    def __init__(self, text: str, column: int, problem: str):
        TidingsError.__init__(self, _caret(text, column, problem))
        self.path = "$"
        self.problem = problem
        self.text = text
        self.column = column

    def under(self, prefix: str) -> str:
        """The message with ``prefix`` before the text, the caret still under the fault.

        ``under("text: ")`` is how the admin API names the field without moving the caret.
        """
        return _caret(prefix + self.text, len(prefix) + self.column, self.problem)


def _caret(text: str, column: int, problem: str) -> str:
    flat = text.replace("\n", " ").replace("\r", " ").replace("\t", " ")
    return f"{flat}\n{' ' * (column - 1)}^ {problem}"


class Op(StrEnum):
    """Comparison operators of attribute, field and property conditions."""

    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    IN = "in"
    NOT_IN = "not_in"
    BETWEEN = "between"
    EXISTS = "exists"
    CONTAINS = "contains"


Scalar: TypeAlias = str | int | float | bool
Value: TypeAlias = Scalar | tuple[Scalar, ...] | None

_ORDER_OPS = frozenset({Op.LT, Op.LE, Op.GT, Op.GE})
_AGG_OPS = frozenset({Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE})


# --- nodes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PropFilter:
    """One condition on an event property: ``category = "shoes"``."""

    prop: str
    op: Op
    value: Value = None

    def matches(self, props: Mapping[str, Any]) -> bool:
        """Return True when the event properties satisfy this filter."""
        return compare(props.get(self.prop), self.op, self.value)


@dataclass(frozen=True, slots=True)
class AllOf:
    """True when every child is true; no children means everyone."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """True when at least one child is true."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """True when the child is false."""

    child: Node


@dataclass(frozen=True, slots=True)
class Attr:
    """Compares a free-form profile attribute."""

    name: str
    op: Op
    value: Value = None


@dataclass(frozen=True, slots=True)
class Field:
    """Compares a built-in profile field (one of :data:`FIELDS`)."""

    field: str
    op: Op
    value: Value = None


@dataclass(frozen=True, slots=True)
class Tag:
    """True when the profile holds the behaviour tag."""

    name: str


@dataclass(frozen=True, slots=True)
class Consent:
    """True when the user accepts messages of the category."""

    category: str


@dataclass(frozen=True, slots=True)
class LifecycleIn:
    """True when the stored lifecycle stage is one of ``stages``."""

    stages: tuple[Lifecycle, ...]


@dataclass(frozen=True, slots=True)
class TierIn:
    """True when the stored value tier is one of ``tiers``."""

    tiers: tuple[Tier, ...]


@dataclass(frozen=True, slots=True)
class Event:
    """Count (or sum of ``prop``) of ``name`` events matching ``where`` within a window."""

    name: str
    agg: str
    op: Op
    value: int | float
    within_s: int
    where: tuple[PropFilter, ...] = ()
    prop: str | None = None


@dataclass(frozen=True, slots=True)
class LastSeen:
    """``within``: seen in the last ``seconds``; ``older_than``: idle for at least that long."""

    mode: str
    seconds: int


Node: TypeAlias = (
    AllOf | AnyOf | Not | Attr | Field | Tag | Consent | LifecycleIn | TierIn | Event | LastSeen
)

EventSource: TypeAlias = Callable[[str, Event, float], float]
"""``(user_id, event_node, now) -> count or sum`` of the user's matching events in the window."""


def walk(node: Node) -> Iterator[Node]:
    """Yield ``node`` and all its descendants, depth first."""
    yield node
    if isinstance(node, AllOf | AnyOf):
        for child in node.children:
            yield from walk(child)
    elif isinstance(node, Not):
        yield from walk(node.child)


# --- comparison semantics ----------------------------------------------------------------------


def equality_key(v: object) -> tuple[str, Scalar] | None:
    """Equality key: booleans never equal numbers; 1 equals 1.0; NaN equals nothing."""
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, int):
        return ("n", v)
    if isinstance(v, float):
        return None if math.isnan(v) else ("n", v)
    if isinstance(v, str):
        return ("s", v)
    return None


def _ordered(a: object, b: object) -> bool:
    """True when ``a`` and ``b`` can be ordered: both non-bool numbers, or both strings."""
    if isinstance(a, str):
        return isinstance(b, str)
    num = (int, float)
    return (
        isinstance(a, num)
        and isinstance(b, num)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and not (isinstance(a, float) and math.isnan(a))
    )


def compare(actual: Any, op: Op, value: Value) -> bool:
    """Apply one comparison to an actual value (``None`` = missing)."""
    if op is Op.EXISTS:
        return actual is not None
    if actual is None:
        return False
    if op is Op.EQ:
        k = equality_key(actual)
        return k is not None and k == equality_key(value)
    if op is Op.NE:
        k = equality_key(actual)
        return k is not None and k != equality_key(value)
    if op is Op.IN or op is Op.NOT_IN:
        k = equality_key(actual)
        if k is None:
            return False
        assert isinstance(value, tuple)
        hit = any(k == equality_key(v) for v in value)
        return hit if op is Op.IN else not hit
    if op is Op.CONTAINS:
        if isinstance(actual, str):
            return isinstance(value, str) and value in actual
        if isinstance(actual, list | tuple | frozenset | set):
            k = equality_key(value)
            return any(equality_key(x) == k for x in actual)
        return False
    if op is Op.BETWEEN:
        assert isinstance(value, tuple)
        lo, hi = value
        return _ordered(actual, lo) and lo <= actual <= hi  # type: ignore[operator]
    if not _ordered(actual, value):
        return False
    if op is Op.LT:
        return bool(actual < value)
    if op is Op.LE:
        return bool(actual <= value)
    if op is Op.GT:
        return bool(actual > value)
    return bool(actual >= value)


_VERSION = re.compile(r"\s*[vV]?(\d{1,9}(?:\.\d{1,9})*)(.*)\Z", re.DOTALL)


def version_key(version: str) -> tuple[tuple[int, ...], int, str]:
    """Return a sort key for a semver-ish version string.

    Numeric parts compare as numbers with trailing zeros ignored (``2.3 == 2.3.0``); a
    pre-release suffix (``-beta``) sorts before the release; build metadata (``+...``) is
    ignored; strings that are no version at all sort before every version.
    """
    m = _VERSION.match(version)
    if m is None:
        return ((), 0, version)
    nums = [int(x) for x in m.group(1).split(".")]
    while nums and nums[-1] == 0:
        nums.pop()
    rest = m.group(2)
    if not rest or rest.startswith("+"):
        return (tuple(nums), 1, "")
    return (tuple(nums), 0, rest.split("+", 1)[0])


def _compare_version(actual: str, op: Op, value: Value) -> bool:
    if op is Op.EXISTS:
        return bool(actual)
    if not actual:
        return False
    a = version_key(actual)
    if op is Op.IN or op is Op.NOT_IN:
        assert isinstance(value, tuple)
        hit = any(a == version_key(str(v)) for v in value)
        return hit if op is Op.IN else not hit
    if op is Op.BETWEEN:
        assert isinstance(value, tuple)
        return version_key(str(value[0])) <= a <= version_key(str(value[1]))
    if op is Op.CONTAINS:
        return isinstance(value, str) and value in actual
    b = version_key(str(value))
    return {
        Op.EQ: a == b,
        Op.NE: a != b,
        Op.LT: a < b,
        Op.LE: a <= b,
        Op.GT: a > b,
        Op.GE: a >= b,
    }[op]


def field_value(profile: Profile, field: str) -> str | None:
    """Return a built-in field of ``profile``; an empty string counts as missing."""
    v: str = getattr(profile, field)
    return v or None


# --- evaluation --------------------------------------------------------------------------------


def evaluate(node: Node, profile: Profile, now: float, events: EventSource | None = None) -> bool:
    """Return True when ``profile`` is in the segment at unix time ``now``.

    Args:
        node: The segment tree.
        profile: The user's profile.
        now: Evaluation time (``last_seen`` windows and event windows end here).
        events: Answers :class:`Event` conditions from the event store; required when the tree
            has any.
    """
    if isinstance(node, AllOf):
        return all(evaluate(c, profile, now, events) for c in node.children)
    if isinstance(node, AnyOf):
        return any(evaluate(c, profile, now, events) for c in node.children)
    if isinstance(node, Not):
        return not evaluate(node.child, profile, now, events)
    if isinstance(node, Tag):
        return node.name in profile.tags
    if isinstance(node, Attr):
        return compare(profile.attrs.get(node.name), node.op, node.value)
    if isinstance(node, LifecycleIn):
        return profile.lifecycle in node.stages
    if isinstance(node, TierIn):
        return profile.tier in node.tiers
    if isinstance(node, Field):
        if node.field == "app_version":
            return _compare_version(profile.app_version, node.op, node.value)
        return compare(field_value(profile, node.field), node.op, node.value)
    if isinstance(node, Consent):
        return allows(profile, node.category)
    if isinstance(node, LastSeen):
        idle = now - profile.last_seen
        return idle <= node.seconds if node.mode == "within" else idle >= node.seconds
    if events is None:
        raise SegmentError("$", "event conditions need an event source")
    return compare(events(profile.user_id, node, now), node.op, node.value)


# --- validation shared by the JSON reader and the parser ---------------------------------------


class _Invalid(Exception):
    """Internal: a validation problem, turned into a SegmentError with a path or column.

    ``key`` names the JSON key at fault when it is not the node's head key.
    """

    def __init__(self, problem: str, key: str | None = None):
        super().__init__(problem)
        self.key = key


def _check_name(v: object, what: str) -> str:
    if not isinstance(v, str) or not v:
        raise _Invalid(f"{what} must be a non-empty string")
    if len(v) > 128:
        raise _Invalid(f"{what} is longer than 128 characters")
    return v


def _check_scalar(v: object) -> Scalar:
    if isinstance(v, bool | str):
        if isinstance(v, str) and len(v) > 4_096:
            raise _Invalid("string value longer than 4096 characters")
        return v
    if isinstance(v, int | float):
        if isinstance(v, float) and not math.isfinite(v):
            raise _Invalid("numbers must be finite")
        if isinstance(v, int) and abs(v) > 2**53 - 1:
            raise _Invalid("integer out of range")
        return v
    raise _Invalid("value must be a string, number or boolean")


def _check_cmp(op: object, value: object) -> tuple[Op, Value]:
    try:
        op = Op(op)  # type: ignore[arg-type]
    except ValueError:
        raise _Invalid(f"unknown op {op!r}; expected one of {', '.join(Op)}", "op") from None
    try:
        return _check_cmp_value(op, value)
    except _Invalid as e:
        raise _Invalid(str(e), "value") from None


def _check_cmp_value(op: Op, value: object) -> tuple[Op, Value]:
    if op is Op.EXISTS:
        if value is not None:
            raise _Invalid("exists takes no value")
        return op, None
    if op is Op.IN or op is Op.NOT_IN:
        if not isinstance(value, list | tuple) or not value:
            raise _Invalid(f"{op} needs a non-empty list of values")
        if len(value) > MAX_IN_VALUES:
            raise _Invalid(f"{op} takes at most {MAX_IN_VALUES} values")
        return op, tuple(_check_scalar(v) for v in value)
    if op is Op.BETWEEN:
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise _Invalid("between needs a [low, high] pair")
        lo, hi = (_check_scalar(v) for v in value)
        if not (_ordered(lo, hi) and lo <= hi):  # type: ignore[operator]
            raise _Invalid("between needs low <= high, both numbers or both strings")
        return op, (lo, hi)
    scalar = _check_scalar(value)
    if op in _ORDER_OPS and isinstance(scalar, bool):
        raise _Invalid(f"{op} needs a number or a string")
    return op, scalar


def _check_window(v: object, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_WINDOW_S:
        raise _Invalid(f"{what} must be a whole number of seconds in 1..{MAX_WINDOW_S}")
    return v


def _check_agg(agg: object, prop: object, op: object, value: object) -> tuple[Op, int | float]:
    if agg not in ("count", "sum"):
        raise _Invalid("agg must be 'count' or 'sum'")
    if agg == "sum":
        _check_name(prop, "prop")
    elif prop is not None:
        raise _Invalid("prop is only used with agg 'sum'")
    checked_op, checked = _check_cmp(op, value)
    if checked_op not in _AGG_OPS:
        raise _Invalid("event op must be one of eq, ne, lt, le, gt, ge")
    if isinstance(checked, bool) or not isinstance(checked, int | float):
        raise _Invalid("event value must be a number")
    return checked_op, checked


def _check_stages(values: Sequence[object], enum: type[Lifecycle] | type[Tier]) -> tuple[Any, ...]:
    if not values:
        raise _Invalid(f"needs at least one of {', '.join(enum)}")
    out = []
    for v in values:
        if not isinstance(v, str) or v not in {e.value for e in enum}:
            raise _Invalid(f"unknown value {v!r}; expected one of {', '.join(enum)}")
        out.append(enum(v))
    return tuple(out)


def _check_size(node: Node) -> None:
    count = 0

    def depth(n: Node) -> int:
        nonlocal count
        count += 1
        if count > MAX_SEGMENT_NODES:
            raise _Invalid(f"more than {MAX_SEGMENT_NODES} nodes")
        if isinstance(n, AllOf | AnyOf):
            return 1 + max((depth(c) for c in n.children), default=0)
        if isinstance(n, Not):
            return 1 + depth(n.child)
        return 1

    if depth(node) > MAX_SEGMENT_DEPTH:
        raise _Invalid(f"nested deeper than {MAX_SEGMENT_DEPTH}")


# --- JSON --------------------------------------------------------------------------------------

_NODE_KEYS: dict[str, frozenset[str]] = {
    "all": frozenset({"all"}),
    "any": frozenset({"any"}),
    "not": frozenset({"not"}),
    "attr": frozenset({"attr", "op", "value"}),
    "field": frozenset({"field", "op", "value"}),
    "tag": frozenset({"tag"}),
    "consent": frozenset({"consent"}),
    "lifecycle": frozenset({"lifecycle"}),
    "tier": frozenset({"tier"}),
    "event": frozenset({"event", "agg", "prop", "op", "value", "within_s", "where"}),
    "last_seen": frozenset({"last_seen", "seconds"}),
}


def from_json(data: object) -> Node:
    """Build a segment tree from its JSON form; raise :class:`SegmentError` naming the path."""
    node = _from_json(data, "$", 0)
    try:
        _check_size(node)
    except _Invalid as e:
        raise SegmentError("$", str(e)) from None
    return node


def _filters_from_json(data: object, path: str) -> tuple[PropFilter, ...]:
    if not isinstance(data, list):
        raise SegmentError(path, "where must be a list of filters")
    if len(data) > 32:
        raise SegmentError(path, "at most 32 filters")
    return tuple(filter_from_json(f, f"{path}[{i}]") for i, f in enumerate(data))


def filter_from_json(data: object, path: str = "$") -> PropFilter:
    """Build one property filter ``{"prop", "op", "value"}``; errors name ``path``."""
    if not isinstance(data, dict):
        raise SegmentError(path, "a filter must be an object")
    extra = set(data) - {"prop", "op", "value"}
    if extra:
        raise SegmentError(f"{path}.{sorted(extra)[0]}", "unknown key")
    try:
        prop = _check_name(data.get("prop"), "prop")
    except _Invalid as e:
        raise SegmentError(f"{path}.prop", str(e)) from None
    try:
        op, value = _check_cmp(data.get("op"), data.get("value"))
    except _Invalid as e:
        raise SegmentError(f"{path}.{e.key or 'op'}", str(e)) from None
    return PropFilter(prop, op, value)


def _from_json(data: object, path: str, depth: int) -> Node:
    if depth > MAX_SEGMENT_DEPTH:
        raise SegmentError(path, f"nested deeper than {MAX_SEGMENT_DEPTH}")
    if not isinstance(data, dict):
        raise SegmentError(path, "a condition must be an object")
    kinds = [k for k in data if k in _NODE_KEYS]
    if len(kinds) != 1:
        raise SegmentError(
            path, f"a condition needs exactly one of {', '.join(_NODE_KEYS)}; got {sorted(data)}"
        )
    kind = kinds[0]
    extra = set(data) - _NODE_KEYS[kind]
    if extra:
        raise SegmentError(f"{path}.{sorted(extra)[0]}", f"unknown key for a {kind} condition")
    head = data[kind]
    sub = f"{path}.{kind}"
    try:
        if kind in ("all", "any"):
            if not isinstance(head, list):
                raise _Invalid(f"{kind} needs a list of conditions")
            children = tuple(_from_json(c, f"{sub}[{i}]", depth + 1) for i, c in enumerate(head))
            if kind == "any" and not children:
                raise _Invalid("any needs at least one condition")
            if len(children) == 1:
                return children[0]  # a one-child group is its child: one canonical tree
            return AllOf(children) if kind == "all" else AnyOf(children)
        if kind == "not":
            return Not(_from_json(head, sub, depth + 1))
        if kind == "tag":
            return Tag(_check_name(head, "tag"))
        if kind == "consent":
            return Consent(_check_name(head, "consent"))
        if kind in ("lifecycle", "tier"):
            values = [head] if isinstance(head, str) else head
            if not isinstance(values, list):
                raise _Invalid(f"{kind} needs a name or a list of names")
            if kind == "lifecycle":
                return LifecycleIn(_check_stages(values, Lifecycle))
            return TierIn(_check_stages(values, Tier))
        if kind == "last_seen":
            if head not in ("within", "older_than"):
                raise _Invalid("last_seen must be 'within' or 'older_than'")
            sub = f"{path}.seconds"
            return LastSeen(head, _check_window(data.get("seconds"), "seconds"))
        if kind == "attr":
            name = _check_name(head, "attr")
            sub = f"{path}.op"
            op, value = _check_cmp(data.get("op"), data.get("value"))
            return Attr(name, op, value)
        if kind == "field":
            if head not in FIELDS:
                raise _Invalid(f"field must be one of {', '.join(FIELDS)}")
            sub = f"{path}.op"
            op, value = _check_cmp(data.get("op"), data.get("value"))
            _check_field_value(head, op, value)
            return Field(head, op, value)
        # event
        name = _check_name(head, "event")
        sub = path
        op, value = _check_agg(
            data.get("agg", "count"), data.get("prop"), data.get("op"), data.get("value")
        )
        sub = f"{path}.within_s"
        within = _check_window(data.get("within_s"), "within_s")
        where = _filters_from_json(data.get("where", []), f"{path}.where")
        agg = str(data.get("agg", "count"))
        prop = data.get("prop")
        return Event(name, agg, op, value, within, where, prop if isinstance(prop, str) else None)
    except _Invalid as e:
        raise SegmentError(f"{path}.{e.key}" if e.key else sub, str(e)) from None


def _check_field_value(field: str, op: Op, value: Value) -> None:
    values = value if isinstance(value, tuple) else (value,)
    if op is not Op.EXISTS and not all(isinstance(v, str) for v in values):
        raise _Invalid(f"{field} compares with strings", "value")


def to_json(node: Node) -> dict[str, Any]:
    """Return the JSON form of a segment tree (the inverse of :func:`from_json`)."""
    if isinstance(node, AllOf):
        return {"all": [to_json(c) for c in node.children]}
    if isinstance(node, AnyOf):
        return {"any": [to_json(c) for c in node.children]}
    if isinstance(node, Not):
        return {"not": to_json(node.child)}
    if isinstance(node, Tag):
        return {"tag": node.name}
    if isinstance(node, Consent):
        return {"consent": node.category}
    if isinstance(node, LifecycleIn):
        return {"lifecycle": [str(s) for s in node.stages]}
    if isinstance(node, TierIn):
        return {"tier": [str(t) for t in node.tiers]}
    if isinstance(node, LastSeen):
        return {"last_seen": node.mode, "seconds": node.seconds}
    if isinstance(node, Attr):
        return _cmp_json({"attr": node.name}, node.op, node.value)
    if isinstance(node, Field):
        return _cmp_json({"field": node.field}, node.op, node.value)
    out: dict[str, Any] = {"event": node.name, "agg": node.agg}
    if node.prop is not None:
        out["prop"] = node.prop
    out.update(op=str(node.op), value=node.value, within_s=node.within_s)
    if node.where:
        out["where"] = [filter_to_json(f) for f in node.where]
    return out


def filter_to_json(f: PropFilter) -> dict[str, Any]:
    """Return the JSON form of one property filter."""
    return _cmp_json({"prop": f.prop}, f.op, f.value)


def _cmp_json(head: dict[str, Any], op: Op, value: Value) -> dict[str, Any]:
    head["op"] = str(op)
    if op is not Op.EXISTS:
        head["value"] = list(value) if isinstance(value, tuple) else value
    return head


# --- text: printer -----------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SYMBOL = {Op.EQ: "=", Op.NE: "!=", Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">="}
_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


def _name(s: str) -> str:
    return s if _WORD.fullmatch(s) else json.dumps(s, ensure_ascii=False)


def _value(v: Scalar) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return repr(v)


def _duration(seconds: int) -> str:
    for unit, size in _UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: the unit list ends with 1 s")


def _cmp_text(op: Op, value: Value) -> str:
    if op is Op.EXISTS:
        return "exists"
    if isinstance(value, tuple):
        if op is Op.BETWEEN:
            return f"between {_value(value[0])} and {_value(value[1])}"
        items = ", ".join(_value(v) for v in value)
        return f"{'in' if op is Op.IN else 'not in'} ({items})"
    assert value is not None
    if op is Op.CONTAINS:
        return f"contains {_value(value)}"
    return f"{_SYMBOL[op]} {_value(value)}"


def to_text(node: Node) -> str:
    """Return the canonical text form of a segment tree."""
    if isinstance(node, AllOf):
        if not node.children:
            return "everyone"
        return " and ".join(_group(c, (AllOf, AnyOf)) for c in node.children)
    if isinstance(node, AnyOf):
        return " or ".join(_group(c, (AnyOf,)) for c in node.children)
    if isinstance(node, Not):
        return "not " + _group(node.child, (AllOf, AnyOf))
    if isinstance(node, Tag):
        return f"tag:{_name(node.name)}"
    if isinstance(node, Consent):
        return f"consent:{_name(node.category)}"
    if isinstance(node, LifecycleIn | TierIn):
        kw = "lifecycle" if isinstance(node, LifecycleIn) else "tier"
        names = [str(s) for s in (node.stages if isinstance(node, LifecycleIn) else node.tiers)]
        return f"{kw} = {names[0]}" if len(names) == 1 else f"{kw} in ({', '.join(names)})"
    if isinstance(node, LastSeen):
        mode = "within" if node.mode == "within" else "older than"
        return f"last_seen {mode} {_duration(node.seconds)}"
    if isinstance(node, Attr):
        return f"attr.{_name(node.name)} {_cmp_text(node.op, node.value)}"
    if isinstance(node, Field):
        return f"{node.field} {_cmp_text(node.op, node.value)}"
    agg = "count" if node.agg == "count" else f"sum({_name(node.prop or '')})"
    text = (
        f"event {_name(node.name)} {agg} {_SYMBOL[node.op]} {_value(node.value)}"
        f" within {_duration(node.within_s)}"
    )
    if len(node.where) == 1:
        text += " where " + _filter_text(node.where[0])
    elif node.where:
        text += " where (" + " and ".join(_filter_text(f) for f in node.where) + ")"
    return text


def _filter_text(f: PropFilter) -> str:
    return f"{_name(f.prop)} {_cmp_text(f.op, f.value)}"


def _group(node: Node, kinds: tuple[type, ...]) -> str:
    text = to_text(node)
    if isinstance(node, kinds) and not (isinstance(node, AllOf) and not node.children):
        return f"({text})"
    return text


# --- text: tokenizer ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?P<unit>[smhdw](?![A-Za-z0-9_]))?
  | (?P<word>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<string>")
  | (?P<op><=|>=|!=|==|[=<>])
  | (?P<punct>[():,.])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # word string number duration op punct end
    text: str
    value: Any
    pos: int


def _string_end(text: str, start: int) -> int:
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        i += 1
    raise SegmentSyntaxError(text, start + 1, "unterminated string")


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SegmentSyntaxError(text, pos + 1, f"unexpected character {text[pos]!r}")
        kind = m.lastgroup if m.lastgroup != "unit" else "number"
        if kind == "ws":
            pos = m.end()
            continue
        if kind == "string":
            end = _string_end(text, pos)
            raw = text[pos:end]
            try:
                value = json.loads(raw)
            except ValueError:
                raise SegmentSyntaxError(text, pos + 1, "bad escape in string") from None
            toks.append(_Tok("string", raw, value, pos))
            pos = end
            continue
        lexeme = m.group()
        if kind == "number":
            num = m.group("number")
            unit = m.group("unit")
            if unit:
                if not re.fullmatch(r"\d+", num):
                    raise SegmentSyntaxError(text, pos + 1, "a duration is a whole number")
                size = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}[unit]
                toks.append(_Tok("duration", lexeme, int(num) * size, pos))
            else:
                is_float = any(c in num for c in ".eE")
                value = float(num) if is_float else int(num) if len(num) < 20 else None
                if value is None or (isinstance(value, float) and not math.isfinite(value)):
                    raise SegmentSyntaxError(text, pos + 1, "number out of range")
                toks.append(_Tok("number", lexeme, value, pos))
        else:
            toks.append(_Tok(kind or "", lexeme, lexeme, pos))
        pos = m.end()
    toks.append(_Tok("end", "", None, len(text)))
    return toks


# --- text: parser ------------------------------------------------------------------------------


def parse(text: str) -> Node:
    """Parse segment text into a tree; raise :class:`SegmentSyntaxError` with a column."""
    if len(text) > MAX_SEGMENT_TEXT:
        raise SegmentSyntaxError(text[:80], 1, f"longer than {MAX_SEGMENT_TEXT} characters")
    parser = _Parser(text, _tokenize(text))
    node = parser.segment()
    if parser.peek.kind != "end":
        parser.fail("expected 'and', 'or' or the end of the segment")
    try:
        _check_size(node)
    except _Invalid as e:
        raise SegmentSyntaxError(text, 1, str(e)) from None
    return node


class _Parser:
    def __init__(self, text: str, toks: list[_Tok]):
        self.text = text
        self.toks = toks
        self.i = 0
        self.depth = 0

    @property
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def fail(self, problem: str, tok: _Tok | None = None) -> NoReturn:
        t = tok or self.peek
        raise SegmentSyntaxError(self.text, t.pos + 1, problem)

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def at_kw(self, *words: str) -> bool:
        t = self.peek
        return t.kind == "word" and t.text.lower() in words

    def accept_kw(self, word: str) -> bool:
        if self.at_kw(word):
            self.i += 1
            return True
        return False

    def expect_kw(self, word: str, problem: str) -> None:
        if not self.accept_kw(word):
            self.fail(problem)

    def accept(self, text: str) -> bool:
        t = self.peek
        if t.kind in ("punct", "op") and t.text == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str, problem: str) -> None:
        if not self.accept(text):
            self.fail(problem)

    # grammar --------------------------------------------------------------------------------

    def segment(self) -> Node:
        self.depth += 1
        if self.depth > MAX_SEGMENT_DEPTH:
            self.fail(f"nested deeper than {MAX_SEGMENT_DEPTH}")
        items = [self.and_expr()]
        while self.accept_kw("or"):
            items.append(self.and_expr())
        self.depth -= 1
        return items[0] if len(items) == 1 else AnyOf(tuple(items))

    def and_expr(self) -> Node:
        items = [self.unary()]
        while self.accept_kw("and"):
            items.append(self.unary())
        return items[0] if len(items) == 1 else AllOf(tuple(items))

    def unary(self) -> Node:
        if self.accept_kw("not"):
            self.depth += 1
            if self.depth > MAX_SEGMENT_DEPTH:
                self.fail(f"nested deeper than {MAX_SEGMENT_DEPTH}")
            node = Not(self.unary())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        tok = self.peek
        if self.accept("("):
            node = self.segment()
            self.expect(")", "expected ')' to close the '('")
            return node
        if tok.kind != "word":
            self.fail("expected a condition (tag:, attr., lifecycle, tier, event, ...)")
        kw = tok.text.lower()
        self.i += 1
        if kw == "everyone":
            return AllOf(())
        if kw in ("tag", "consent"):
            self.expect(":", f"expected ':' after '{kw}'")
            name = self.name(f"expected a {kw} name after ':'")
            return Tag(name) if kw == "tag" else Consent(name)
        if kw in ("lifecycle", "tier"):
            return self.stages(kw)
        if kw == "attr":
            self.expect(".", "expected '.' and an attribute name after 'attr'")
            name = self.name("expected an attribute name after 'attr.'")
            op, value = self.comparison()
            return Attr(name, op, value)
        if kw in FIELDS:
            start = self.i
            op, value = self.comparison()
            try:
                _check_field_value(kw, op, value)
            except _Invalid as e:
                self.fail(str(e), self.toks[min(start + 1, self.i - 1)])
            return Field(kw, op, value)
        if kw == "event":
            return self.event()
        if kw == "last_seen":
            if self.accept_kw("within"):
                mode = "within"
            elif self.accept_kw("older"):
                self.expect_kw("than", "expected 'than' after 'older'")
                mode = "older_than"
            else:
                self.fail("expected 'within' or 'older than' after 'last_seen'")
            return LastSeen(mode, self.duration(f"expected a duration such as 7d after '{mode}'"))
        self.i -= 1
        self.fail(f"unknown condition {tok.text!r}")

    def name(self, problem: str) -> str:
        tok = self.peek
        if tok.kind not in ("word", "string") or not tok.value:
            self.fail(problem)
        self.i += 1
        value = str(tok.value)
        if len(value) > 128:
            self.fail("names are at most 128 characters", tok)
        return value

    def stages(self, kw: str) -> Node:
        enum: type[Lifecycle] | type[Tier] = Lifecycle if kw == "lifecycle" else Tier
        words: list[_Tok] = []
        if self.accept("=") or self.accept("=="):
            words.append(self.stage_word(enum))
        elif self.accept_kw("in"):
            self.expect("(", "expected '(' after 'in'")
            words.append(self.stage_word(enum))
            while self.accept(","):
                words.append(self.stage_word(enum))
            self.expect(")", "expected ',' or ')' in the list")
        else:
            self.fail(f"expected '=' or 'in' after '{kw}'")
        values = tuple(enum(t.text.lower()) for t in words)
        return LifecycleIn(values) if kw == "lifecycle" else TierIn(values)  # type: ignore[arg-type]

    def stage_word(self, enum: type[Lifecycle] | type[Tier]) -> _Tok:
        tok = self.peek
        if tok.kind != "word" or tok.text.lower() not in set(enum):
            self.fail(f"expected one of {', '.join(enum)}")
        self.i += 1
        return tok

    def comparison(self) -> tuple[Op, Value]:
        tok = self.peek
        if tok.kind == "op":
            self.i += 1
            symbol = "=" if tok.text == "==" else tok.text
            op = next(o for o, s in _SYMBOL.items() if s == symbol)
            value: Value = self.value(f"expected a value after '{tok.text}'")
            if op in _ORDER_OPS and isinstance(value, bool):
                self.fail(f"'{tok.text}' needs a number or a string", tok)
            return op, value
        if self.accept_kw("exists"):
            return Op.EXISTS, None
        if self.accept_kw("contains"):
            return Op.CONTAINS, self.value("expected a value after 'contains'")
        if self.accept_kw("between"):
            lo_tok = self.peek
            lo = self.value("expected a value after 'between'")
            self.expect_kw("and", "expected 'and' between the two bounds")
            hi = self.value("expected a value after 'and'")
            if not (_ordered(lo, hi) and lo <= hi):  # type: ignore[operator]
                self.fail("between needs low <= high, both numbers or both strings", lo_tok)
            return Op.BETWEEN, (lo, hi)
        negated = self.accept_kw("not")
        if negated and not self.at_kw("in"):
            self.fail("expected 'in' after 'not'")
        if self.accept_kw("in"):
            self.expect("(", "expected '(' after 'in'")
            values = [self.value("expected a value in the list")]
            while self.accept(","):
                values.append(self.value("expected a value after ','"))
                if len(values) > MAX_IN_VALUES:
                    self.fail(f"at most {MAX_IN_VALUES} values in a list")
            self.expect(")", "expected ',' or ')' in the list")
            return (Op.NOT_IN if negated else Op.IN), tuple(values)
        self.fail("expected a comparison (=, !=, <, <=, >, >=, in, between, exists, contains)")

    def value(self, problem: str) -> Scalar:
        tok = self.peek
        if tok.kind in ("string", "number"):
            self.i += 1
            if isinstance(tok.value, int) and abs(tok.value) > 2**53 - 1:
                self.fail("integer out of range", tok)
            if isinstance(tok.value, str) and len(tok.value) > 4_096:
                self.fail("string value longer than 4096 characters", tok)
            return tok.value  # type: ignore[no-any-return]
        if tok.kind == "word" and tok.text.lower() not in ("and", "or", "not"):
            self.i += 1
            low = tok.text.lower()
            if low in ("true", "false"):
                return low == "true"
            return tok.text
        self.fail(problem)

    def duration(self, problem: str) -> int:
        tok = self.peek
        if tok.kind != "duration":
            self.fail(problem)
        if not 0 < tok.value <= MAX_WINDOW_S:
            self.fail(f"a duration must be between 1s and {MAX_WINDOW_S // 86_400}d", tok)
        self.i += 1
        return int(tok.value)

    def event(self) -> Node:
        name = self.name("expected an event name after 'event'")
        prop: str | None = None
        if self.accept_kw("count"):
            agg = "count"
        elif self.accept_kw("sum"):
            agg = "sum"
            self.expect("(", "expected '(' after 'sum'")
            prop = self.name("expected a property name in sum(...)")
            self.expect(")", "expected ')' after the property name")
        else:
            self.fail("expected 'count' or 'sum(prop)' after the event name")
        tok = self.peek
        if tok.kind != "op":
            self.fail("expected a comparison (=, !=, <, <=, >, >=) after the aggregate")
        op, value = self.comparison()
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"expected a number after '{tok.text}'", self.toks[self.i - 1])
        self.expect_kw("within", "expected 'within' and a duration such as 30d")
        within = self.duration("expected a duration such as 30d after 'within'")
        where: list[PropFilter] = []
        if self.accept_kw("where"):
            if self.accept("("):
                where.append(self.filter())
                while self.accept_kw("and"):
                    where.append(self.filter())
                self.expect(")", "expected 'and' or ')' in the where list")
            else:
                where.append(self.filter())
        return Event(name, agg, op, value, within, tuple(where), prop)

    def filter(self) -> PropFilter:
        prop = self.name("expected a property name")
        op, value = self.comparison()
        return PropFilter(prop, op, value)
