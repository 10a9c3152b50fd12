"""The banner display policy: quiet hours, caps, minimum gap, urgent bypass, expiry."""

from __future__ import annotations

import pytest

from tidings.client_sdk import BannerPolicy, QuietHours
from tidings.client_sdk.banners import decide, release
from tidings.protocol.frames import Message

NOON = 1_767_268_800.0  # 2026-01-01 12:00 UTC
MIDNIGHT = NOON + 12 * 3600


def msg(
    id: str = "m", *, created: float = NOON, expires: float = NOON + 86400, **kw: object
) -> Message:
    return Message(id=id, kind="banner", title="t", body="b", created_at=int(created * 1000),
                   expires_at=int(expires * 1000), **kw)  # type: ignore[arg-type]  # fmt: skip


QUIET = QuietHours("22:00", "08:00")


@pytest.mark.parametrize(
    ("message", "now", "policy", "shown", "verdict"),
    [
        (msg(), NOON, BannerPolicy(), [], "show"),
        (msg(expires=NOON - 1), NOON, BannerPolicy(), [], "drop"),
        (msg(), MIDNIGHT, BannerPolicy(), [], "hold"),
        (msg(priority="urgent", category="transactional"), MIDNIGHT, BannerPolicy(), [], "show"),
        (msg(priority="urgent", category="marketing"), MIDNIGHT, BannerPolicy(), [], "hold"),
        (msg(priority="urgent", category="transactional"), MIDNIGHT,
         BannerPolicy(allow_urgent_bypass=False), [], "hold"),
        (msg(), NOON, BannerPolicy(min_gap_s=60), [NOON - 30], "hold"),
        (msg(), NOON, BannerPolicy(min_gap_s=60), [NOON - 61], "show"),
        (msg(), NOON, BannerPolicy(max_per_hour=2), [NOON - 100, NOON - 200], "hold"),
        (msg(), NOON, BannerPolicy(max_per_hour=2), [NOON - 100, NOON - 3700], "show"),
    ],
)  # fmt: skip
def test_decide(message: Message, now: float, policy: BannerPolicy, shown: list[float],
                verdict: str) -> None:  # fmt: skip
    assert (
        decide(message, now, policy=policy, quiet=QUIET, device_tz="UTC", shown_at=shown) == verdict
    )


def test_release_shows_the_newest_few_and_never_an_expired_one() -> None:
    held = [msg(f"m{i}", created=NOON + i, expires=MIDNIGHT + 10 * 3600) for i in range(5)]
    held.append(msg("old", created=NOON + 10, expires=MIDNIGHT))
    now = MIDNIGHT + 8 * 3600
    show, rest = release(held, now, policy=BannerPolicy(max_shown_after_quiet=3))
    assert [m.id for m in show] == ["m4", "m3", "m2"]
    assert [m.id for m in rest] == ["m1", "m0"]
