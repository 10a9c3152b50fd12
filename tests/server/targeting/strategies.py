"""Hypothesis strategies for profiles and segment trees."""

from __future__ import annotations

from hypothesis import strategies as st

from tidings.server.targeting.lifecycle import Lifecycle, Tier
from tidings.server.targeting.profiles import EMPTY_HOURS, Profile
from tidings.server.targeting.segments import (
    FIELDS,
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
    Tag,
    TierIn,
)

NOW = 1_700_000_000.0
DAY = 86_400

any_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,8}", fullmatch=True) | st.text(
    min_size=1, max_size=6
)
numbers = st.integers(-1000, 1000) | st.floats(
    min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False
)


def comparisons(scalars: st.SearchStrategy[object]) -> st.SearchStrategy[tuple[Op, object]]:
    """(op, value) pairs that validate, with values drawn from ``scalars``."""
    ordered = scalars.filter(lambda v: not isinstance(v, bool))
    return st.one_of(
        st.tuples(st.sampled_from([Op.EQ, Op.NE, Op.CONTAINS]), scalars),
        st.tuples(st.sampled_from([Op.LT, Op.LE, Op.GT, Op.GE]), ordered),
        st.tuples(
            st.sampled_from([Op.IN, Op.NOT_IN]),
            st.lists(scalars, min_size=1, max_size=4).map(tuple),
        ),
        st.tuples(
            st.just(Op.BETWEEN),
            st.lists(numbers, min_size=2, max_size=2).map(lambda v: tuple(sorted(v))),
        ),
        st.tuples(
            st.just(Op.BETWEEN),
            st.lists(st.text(max_size=4), min_size=2, max_size=2).map(lambda v: tuple(sorted(v))),
        ),
        st.tuples(st.just(Op.EXISTS), st.none()),
    )


def trees(
    names: st.SearchStrategy[str] = any_names,
    scalars: st.SearchStrategy[object] | None = None,
    strings: st.SearchStrategy[str] | None = None,
    max_leaves: int = 8,
) -> st.SearchStrategy[Node]:
    """Valid segment trees."""
    scalars = scalars if scalars is not None else (st.text(max_size=8) | numbers | st.booleans())
    strings = strings if strings is not None else st.text(max_size=8)
    field_cmp = comparisons(strings).filter(
        lambda c: (
            c[0] is not Op.BETWEEN
            or all(
                isinstance(v, str)
                for v in c[1]  # type: ignore[union-attr]
            )
        )
    )
    filters = st.builds(lambda n, c: PropFilter(n, c[0], c[1]), names, comparisons(scalars))
    agg_op = st.sampled_from([Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE])
    windows = st.sampled_from([1, 59, 60, 3600, 7 * DAY, 30 * DAY]) | st.integers(1, 90 * DAY)
    events = st.builds(
        lambda n, sum_prop, op, v, w, where: Event(
            n, "sum" if sum_prop else "count", op, v, w, tuple(where), sum_prop
        ),
        names,
        st.none() | names,
        agg_op,
        st.integers(0, 10) | st.floats(0, 100, allow_nan=False),
        windows,
        st.lists(filters, max_size=3),
    )
    leaves = st.one_of(
        st.builds(Tag, names),
        st.builds(Consent, names),
        st.builds(lambda n, c: Attr(n, c[0], c[1]), names, comparisons(scalars)),
        st.builds(lambda f, c: Field(f, c[0], c[1]), st.sampled_from(FIELDS), field_cmp),
        st.lists(st.sampled_from(list(Lifecycle)), min_size=1, max_size=3).map(
            lambda v: LifecycleIn(tuple(v))
        ),
        st.lists(st.sampled_from(list(Tier)), min_size=1, max_size=3).map(
            lambda v: TierIn(tuple(v))
        ),
        st.builds(LastSeen, st.sampled_from(["within", "older_than"]), windows),
        events,
        st.just(AllOf(())),
    )
    return st.recursive(
        leaves,
        lambda kids: st.one_of(
            st.lists(kids, min_size=2, max_size=4).map(lambda c: AllOf(tuple(c))),
            st.lists(kids, min_size=2, max_size=4).map(lambda c: AnyOf(tuple(c))),
            st.builds(Not, kids),
        ),
        max_leaves=max_leaves,
    )


# Small pools, so random trees actually select some of the random profiles.
POOL_NAMES = st.sampled_from(["region", "age", "vip", "interests", "tier2"])
POOL_TAGS = ["sports_fan", "takeout_regular", "night_owl"]
POOL_SCALARS = st.sampled_from(["CN-SH", "CN-BJ", "x", 18, 30, 30.0, True, False, 0])
POOL_STRINGS = st.sampled_from(["zh-CN", "en-US", "ios", "android", "Asia/Shanghai", "2.3", "1.9"])


def pool_trees() -> st.SearchStrategy[Node]:
    """Trees over the small pools."""
    return trees(
        names=POOL_NAMES | st.sampled_from(POOL_TAGS) | st.sampled_from(["marketing", "news"]),
        scalars=POOL_SCALARS,
        strings=POOL_STRINGS,
    )


@st.composite
def pool_profiles(draw: st.DrawFn, user_id: str) -> Profile:
    """A profile over the small pools."""
    attrs = draw(
        st.dictionaries(
            POOL_NAMES,
            POOL_SCALARS | st.lists(POOL_SCALARS, max_size=2) | st.none(),
            max_size=4,
        )
    )
    return Profile(
        app="shop",
        user_id=user_id,
        attrs=attrs,
        tags=frozenset(draw(st.lists(st.sampled_from(POOL_TAGS), max_size=3))),
        lifecycle=draw(st.sampled_from(list(Lifecycle))),
        tier=draw(st.sampled_from(list(Tier))),
        active_hours=EMPTY_HOURS,
        consent=draw(st.dictionaries(st.sampled_from(["marketing", "news"]), st.booleans())),
        first_seen=NOW - 60 * DAY,
        last_seen=NOW - draw(st.integers(0, 60)) * DAY,
        tz=draw(st.sampled_from(["", "Asia/Shanghai", "UTC"])),
        locale=draw(st.sampled_from(["", "zh-CN", "en-US"])),
        platform=draw(st.sampled_from(["", "ios", "android"])),
        app_version=draw(st.sampled_from(["", "2.3", "2.3.0", "1.9", "2.10"])),
    )
