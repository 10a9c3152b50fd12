"""Targeting over stored data: build profiles from the store and resolve segments on them."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from tidings.server.storage.rows import ProfileRow
from tidings.server.targeting.index import ProfileIndex
from tidings.server.targeting.profiles import Profile, reclassify

__all__ = ["build_index", "profile_from_row"]


def profile_from_row(app: str, row: ProfileRow, now: float) -> Profile:
    """A targeting profile (lifecycle and tier computed at ``now``) from a stored row."""
    profile = Profile(
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
    return reclassify(profile, now)


def build_index(app: str, rows: Sequence[ProfileRow], now: float) -> ProfileIndex:
    """An index over every stored profile of ``app``."""
    index = ProfileIndex(app)
    for row in rows:
        index.upsert(profile_from_row(app, row, now))
    return index
