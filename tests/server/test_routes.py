"""Where a message goes and how it is made: one rule for direct sends and campaigns."""

from __future__ import annotations

import pytest

from tidings.server.delivery import Routes, new_message, route

DEVICES = {"ana": ["a-phone", "a-tablet"], "bo": ["b-phone"]}


@pytest.mark.parametrize(
    ("kind", "users", "expected"),
    [
        # every device of a user with devices, whatever the kind
        ("banner", ["ana"], Routes((("a-phone", "ana"), ("a-tablet", "ana")), (), ())),
        # a user with none: kept in their inbox if the kind is kept there...
        ("inbox", ["cy"], Routes((), ("cy",), ())),
        ("both", ["bo", "cy"], Routes((("b-phone", "bo"),), ("cy",), ())),
        # ...and skipped if the kind shows only on a device
        ("banner", ["bo", "cy"], Routes((("b-phone", "bo"),), (), ("cy",))),
        ("modal", ["cy", "dee"], Routes((), (), ("cy", "dee"))),
        # a user named twice counts once
        ("inbox", ["bo", "bo", "cy", "cy"], Routes((("b-phone", "bo"),), ("cy",), ())),
        # a kind this version does not know is inbox content
        ("hologram", ["cy"], Routes((), ("cy",), ())),
    ],
)
def test_route_sends_to_every_device_and_keeps_or_skips_users_without_one(
    kind: str, users: list[str], expected: Routes
) -> None:
    assert route(kind, users, DEVICES) == expected


@pytest.mark.parametrize(
    ("kind", "ttl_s", "lifetime", "ttl_default"),
    [
        ("banner", None, 600, True),  # the app's banner lifetime, counted after quiet hours
        ("modal", None, 600, True),
        ("inbox", None, 86_400, False),  # the app's inbox lifetime
        ("both", None, 86_400, False),
        ("banner", 30, 30, False),  # the sender's lifetime binds as sent
        ("inbox", 30, 30, False),
    ],
)
def test_a_new_message_lives_as_long_as_its_sender_or_its_kind_says(
    kind: str, ttl_s: int | None, lifetime: int, ttl_default: bool
) -> None:
    m = new_message(kind=kind, title="t", body="b", now=1_000.0, ttl_s=ttl_s,
                    ttls=(600, 86_400))  # fmt: skip
    assert (m.created_at, m.expires_at - m.created_at) == (1_000_000, lifetime * 1000)
    assert m.ttl_default is ttl_default
    assert (
        len(m.id) == 32
        and m.id
        != new_message(
            kind=kind, title="t", body="b", now=1_000.0, ttl_s=ttl_s, ttls=(600, 86_400)
        ).id
    )
