"""The sans-I/O server session: the phase table, delivery order, gaps and the frame cap, driven
with bytes in and bytes out — no sockets, no event loop (PROTOCOL.md §2, §3, §4)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.protocol import codes
from tidings.protocol.codec import decode_server, encode, encode_message
from tidings.protocol.errors import InvalidField, MalformedFrame, UnexpectedFrame
from tidings.protocol.frames import (
    Ack,
    Deliver,
    Error,
    Events,
    GoAway,
    Hello,
    InboxState,
    Message,
    Ok,
    Ping,
    Pong,
    Revoke,
    Welcome,
)
from tidings.protocol.session import DeliverySkipped, ReplayNeeded, ServerSession
from tidings.protocol.state import CLIENT_ALLOWED, SERVER_ALLOWED, Phase

WELCOME = Welcome(session="s", device="d", user=None, server_time=1, heartbeat_ms=1)
HELLO = Hello(token="t")


def wire(seq: int, body: str = "") -> bytes:
    return encode_message(Message(id=f"m{seq}", kind="inbox", title="t", body=body))


def opened(**kwargs: Any) -> ServerSession:
    """A session past hello and welcome, its first replay done."""
    s = ServerSession(**kwargs)
    s.receive(encode(HELLO))
    s.send(WELCOME)
    s.end_replay()
    s.data_to_send()
    return s


def sent_seqs(s: ServerSession) -> list[int]:
    frames = [decode_server(d) for d in s.data_to_send()]
    return [f.seq for f in frames if isinstance(f, Deliver)]


# --- the phase table, as data --------------------------------------------------------------------


def test_the_phase_tables_are_the_ones_in_protocol_md() -> None:
    # PROTOCOL.md §2.1 writes these tables out; a change here must change the document.
    def names(table: dict[Phase, dict[type, Phase]]) -> dict[str, dict[str, str]]:
        return {
            p.value: {f.TYPE: nxt.value for f, nxt in sorted(t.items(), key=lambda i: i[0].TYPE)}
            for p, t in table.items()
        }

    client_open = ["ack", "events", "identify", "inbox_update", "ping", "pong", "prefs", "receipt"]
    assert names(CLIENT_ALLOWED) == {
        "handshake": {"hello": "open"},
        "open": dict.fromkeys(client_open, "open"),
        "closed": {},
    }
    server_open = ["deliver", "error", "inbox", "ok", "ping", "pong", "revoke"]
    assert names(SERVER_ALLOWED) == {
        "handshake": {"error": "handshake", "goaway": "closed", "welcome": "open"},
        "open": {**dict.fromkeys(server_open, "open"), "goaway": "closed"},
        "closed": {},
    }


@pytest.mark.parametrize(
    ("received", "phase", "error"),
    [
        ([HELLO], Phase.OPEN, None),
        ([HELLO, Ping(ts=1), Ack(seq=3)], Phase.OPEN, None),
        ([Ping(ts=1)], Phase.CLOSED, UnexpectedFrame),  # nothing before hello
        ([Events(rid=4, events=())], Phase.CLOSED, UnexpectedFrame),
        ([HELLO, HELLO], Phase.CLOSED, UnexpectedFrame),  # hello once
        ([HELLO, Ping(), Ping()], Phase.OPEN, None),
    ],
)
def test_client_frames_move_through_the_table(
    received: list[Any], phase: Phase, error: type[Exception] | None
) -> None:
    s = ServerSession()
    *first, last = received
    for frame in first:
        s.receive(encode(frame))
    if error is None:
        assert s.receive(encode(last)) == last
    else:
        with pytest.raises(error):
            s.receive(encode(last))
    assert s.their_phase is phase


@pytest.mark.parametrize(
    ("data", "error", "rid"),
    [
        (encode(Events(rid=4, events=())), UnexpectedFrame, 4),  # a request before hello
        (msgpack.packb({"t": "events", "rid": 9, "events": 1}), InvalidField, 9),
        (msgpack.packb({"t": "deliver", "seq": 1}), UnexpectedFrame, None),
        ("text", MalformedFrame, None),
        (b"\xc1", MalformedFrame, None),
    ],
)
def test_an_error_names_the_request_it_answers(
    data: bytes | str, error: type[Exception], rid: int | None
) -> None:
    s = ServerSession()
    with pytest.raises(error) as info:
        s.receive(data)
    assert getattr(info.value, "rid", None) == rid
    with pytest.raises(UnexpectedFrame):  # a client that broke the protocol is not read on
        s.receive(encode(HELLO))


@pytest.mark.parametrize(
    ("sent", "phase", "last_refused"),
    [
        ([WELCOME, Ok(rid=1), Pong()], Phase.OPEN, None),
        ([Error(code="unauthorized", message="")], Phase.HANDSHAKE, None),
        ([Ok(rid=1)], Phase.HANDSHAKE, Ok(rid=1)),  # nothing but welcome, error, goaway first
        ([WELCOME, WELCOME], Phase.OPEN, WELCOME),
        ([WELCOME, GoAway()], Phase.CLOSED, None),
    ],
)
def test_our_frames_move_through_the_table_the_client_checks(
    sent: list[Any], phase: Phase, last_refused: bool
) -> None:
    s = ServerSession()
    s.receive(encode(HELLO))
    *first, last = sent
    for frame in first:
        assert s.send(frame)
    if last_refused:  # a bug of the server, raised where it happens
        with pytest.raises(UnexpectedFrame):
            s.send(last)
    else:
        assert s.send(last)
    assert s.our_phase is phase


def test_nothing_is_sent_after_goaway_and_frames_come_out_in_order() -> None:
    s = opened()
    s.send(Pong(ts=1))
    s.send_encoded(encode(Revoke(ids=("m1",))))
    s.send(GoAway(reconnect_ms=5))
    assert not s.send(Pong(ts=2))
    assert not s.send_encoded(encode(InboxState(ver=1, changes=())))
    assert [type(decode_server(d)) for d in s.data_to_send()] == [Pong, Revoke, GoAway]
    assert s.data_to_send() == []


# --- delivery order (§3) -------------------------------------------------------------------------


# Each step: ("live", seq) | ("replay", seq) | ("end",) | ("resume", seq)
STEPS: list[tuple[str, list[tuple[Any, ...]], list[int], list[Any]]] = [
    ("in order", [("live", 1), ("live", 2), ("live", 3)], [1, 2, 3], []),
    ("a live gap asks for a replay and holds the delivery",
     [("live", 1), ("live", 3)], [1], [ReplayNeeded(after=1)]),
    ("the replay fills the gap, then the held one goes out",
     [("live", 1), ("live", 3), ("replay", 2), ("replay", 3), ("end",)], [1, 2, 3],
     [ReplayNeeded(after=1)]),
    ("a gap the replay cannot fill was dropped: not waited for",
     [("live", 3), ("end",), ("live", 4)], [3, 4], [ReplayNeeded(after=0)]),
    ("duplicates of what a replay sent are not sent again",
     [("live", 2), ("replay", 1), ("replay", 2), ("end",), ("live", 2)], [1, 2],
     [ReplayNeeded(after=0)]),
    ("live deliveries wait while a replay runs, and leave sorted",
     [("live", 1), ("live", 3), ("live", 2), ("replay", 1), ("end",)], [1, 2, 3],
     [ReplayNeeded(after=1)]),
    ("resume counts everything up to it as sent",
     [("resume", 5), ("replay", 4), ("replay", 6), ("end",), ("live", 7)], [6, 7], []),
]  # fmt: skip


@pytest.mark.parametrize(("name", "steps", "seqs", "events"), STEPS, ids=[s[0] for s in STEPS])
def test_deliveries_leave_in_ascending_order(
    name: str, steps: list[tuple[Any, ...]], seqs: list[int], events: list[Any]
) -> None:
    s = opened()
    for step in steps:
        if step[0] == "live":
            s.deliver(step[1], wire(step[1]))
        elif step[0] == "replay":
            s.replay(step[1], wire(step[1]))
        elif step[0] == "resume":
            s.resume(step[1])
        else:
            s.end_replay()
    assert sent_seqs(s) == seqs
    assert s.events_received() == events


def test_deliveries_wait_for_welcome_and_the_first_replay() -> None:
    s = ServerSession()
    s.receive(encode(HELLO))
    assert not s.deliver(1, wire(1))  # before welcome: held
    s.send(WELCOME)
    s.resume(0)
    s.replay(1, wire(1))
    assert s.end_replay() == 0  # the held copy of 1 was sent by the replay
    assert sent_seqs(s) == [1]


def test_a_delivery_over_the_frame_cap_is_skipped_and_its_number_is_a_gap() -> None:
    s = opened(max_frame_bytes=1024)
    assert not s.deliver(1, wire(1, "x" * 2000))
    assert s.deliver(2, wire(2))  # the next one is in order: no replay for the skipped one
    assert sent_seqs(s) == [2]
    [event] = s.events_received()
    assert isinstance(event, DeliverySkipped) and event.seq == 1 and event.size > 1024
    assert s.last_sent == 2


def test_closing_drops_what_is_held_and_sends_nothing_more() -> None:
    s = ServerSession()
    s.receive(encode(HELLO))
    s.send(WELCOME)
    s.deliver(1, wire(1))
    s.close()
    s.end_replay()
    assert not s.deliver(2, wire(2))
    assert not s.error(codes.ERR_INTERNAL, "late")
    assert [type(decode_server(d)) for d in s.data_to_send()] == [Welcome]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["live", "replay", "end"]), st.integers(1, 12))))
def test_whatever_the_interleaving_seqs_only_ever_go_up(steps: list[tuple[str, int]]) -> None:
    s = opened()
    for kind, seq in steps:
        if kind == "live":
            s.deliver(seq, wire(seq))
        elif kind == "replay":
            s.replay(seq, wire(seq))
        else:
            s.end_replay()
    s.end_replay()
    seqs = sent_seqs(s)
    assert seqs == sorted(set(seqs))
    assert s.last_sent == (seqs[-1] if seqs else 0)
