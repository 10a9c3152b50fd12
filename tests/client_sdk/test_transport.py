"""The reconnect policy alone (PROTOCOL.md §12): rotation, backoff, stable sessions, goaway."""

from __future__ import annotations

import pytest

from tidings.client_sdk.transport import STABLE_SESSION_S, Dialer

A, B, C = "ws://a:1", "ws://b:1", "ws://c:1"


def test_a_rotation_tries_each_gateway_once_then_backs_off() -> None:
    d = Dialer((A, B, C), backoff_base=1.0, backoff_cap=60.0)
    assert d.url == A
    assert (d.lost(0.0), d.url) == (0.0, B)  # A failed: B at once
    assert (d.lost(0.0), d.url) == (0.0, C)
    delay = d.lost(0.0)  # the whole rotation failed: wait, then start over at A
    assert 0.0 <= delay <= 1.0 and d.url == A
    assert d.lost(0.0) == 0.0 and d.url == B  # a new rotation


def test_a_welcome_keeps_the_gateway_but_only_a_stable_session_resets_the_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("random.random", lambda: 0.5)  # the middle of each window
    d = Dialer((A,), backoff_base=1.0, backoff_cap=60.0)
    assert [d.lost(0.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    d.welcomed(100.0)
    assert d.lost(100.0 + STABLE_SESSION_S - 1) == 16.0  # dropped at once: still backing off
    assert d.url == A
    d.welcomed(200.0)
    assert d.lost(200.0 + STABLE_SESSION_S) == 0.5  # lasted: back to the first window


@pytest.mark.parametrize("hint_ms", [500, 3000])
def test_a_goaway_hint_sets_the_next_delay_with_jitter(hint_ms: int) -> None:
    d = Dialer((A, B), backoff_base=30.0, backoff_cap=60.0)
    d.welcomed(0.0)
    d.go_away(hint_ms)
    delay = d.lost(1.0)
    assert hint_ms / 1000 * 0.5 <= delay <= hint_ms / 1000 * 1.5
    assert d.url == A  # it was welcomed: come back to the same gateway
