"""The sans-I/O client session: the phase table the client checks, requests matched to answers by
rid, delivery de-duplication and the ack cursor, driven with bytes in and bytes out — no sockets,
no event loop (PROTOCOL.md §2, §3, §4, §12)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from tidings.protocol.codec import decode_client, encode, encode_message
from tidings.protocol.errors import FrameTooLarge, MalformedFrame, ProtocolError, UnexpectedFrame
from tidings.protocol.frames import (
    Ack,
    Deliver,
    DeviceInfo,
    Error,
    Events,
    Frame,
    GoAway,
    Hello,
    Identify,
    InboxState,
    Message,
    Ok,
    Ping,
    Pong,
    Prefs,
    Revoke,
    Welcome,
)
from tidings.protocol.session import (
    ClientSession,
    Delivery,
    HelloRefused,
    RequestAnswered,
    RequestFailed,
    ServerSession,
)
from tidings.protocol.state import SERVER_ALLOWED, Phase

WELCOME = Welcome(session="s", device="d", user=None, server_time=1, heartbeat_ms=1)
DEVICE = DeviceInfo(platform="test")


def deliver(seq: int, msg_id: str | None = None) -> bytes:
    msg = Message(id=msg_id or f"m{seq}", kind="inbox", title="t", body="b")
    return encode(Deliver(seq=seq, msg=msg))


def opened(**kwargs: Any) -> ClientSession:
    """A session past hello and welcome, its hello already written."""
    s = ClientSession(**kwargs)
    s.connect("token", DEVICE)
    assert s.receive(encode(WELCOME)) == WELCOME
    s.data_to_send()
    return s


def sent(s: ClientSession) -> list[Frame]:
    return [decode_client(d) for d in s.data_to_send()]


def identify(rid: int) -> Identify:
    return Identify(rid=rid, user="u1")


# --- the phase table (§2, Phases) ----------------------------------------------------------------

SAMPLES: dict[type[Frame], Frame] = {
    Welcome: WELCOME,
    Deliver: Deliver(seq=1, msg=Message(id="m1", kind="inbox", title="t", body="b")),
    Ok: Ok(rid=1),
    Error: Error(code="internal", message="m", rid=1),
    Revoke: Revoke(ids=("m1",)),
    InboxState: InboxState(ver=1, changes=()),
    GoAway: GoAway(reconnect_ms=5),
    Ping: Ping(ts=1),
    Pong: Pong(ts=1),
}


def at(phase: Phase) -> ClientSession:
    s = ClientSession()
    if phase is not Phase.CLOSED:
        s.connect("token", DEVICE)
    if phase is Phase.OPEN:
        s.receive(encode(WELCOME))
    return s


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("kind", list(SAMPLES), ids=lambda k: k.TYPE)
def test_every_server_frame_moves_the_phase_as_the_table_says(
    phase: Phase, kind: type[Frame]
) -> None:
    s = at(phase)
    following = SERVER_ALLOWED[phase].get(kind)
    if following is None:
        with pytest.raises(UnexpectedFrame):
            s.receive(encode(SAMPLES[kind]))
        assert s.their_phase is Phase.CLOSED
    else:
        s.receive(encode(SAMPLES[kind]))
        assert s.their_phase is following


@pytest.mark.parametrize(
    ("received", "error"),
    [
        ([Deliver], UnexpectedFrame),  # nothing before welcome but welcome, error, goaway
        ([Ok], UnexpectedFrame),
        ([Welcome, Welcome], UnexpectedFrame),  # welcome once
        ([Welcome, GoAway, Deliver], UnexpectedFrame),  # nothing after goaway
        ([GoAway, Welcome], UnexpectedFrame),
        ([Error, Welcome], None),  # the error does not end the phase; the close does
    ],
    ids=lambda v: "-".join(k.TYPE for k in v) if isinstance(v, list) else str(v),
)
def test_a_server_frame_in_the_wrong_phase_is_the_documented_error(
    received: list[type[Frame]], error: type[Exception] | None
) -> None:
    s = ClientSession()
    s.connect("token", DEVICE)
    *first, last = received
    for kind in first:
        s.receive(encode(SAMPLES[kind]))
    if error is None:
        s.receive(encode(SAMPLES[last]))
        return
    with pytest.raises(error):
        s.receive(encode(SAMPLES[last]))
    with pytest.raises(UnexpectedFrame):  # a server that broke the protocol is not read on
        s.receive(encode(Ping(ts=1)))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ("text", MalformedFrame),
        (b"\xc1", MalformedFrame),
        (msgpack.packb({"t": "hello", "token": "t"}), UnexpectedFrame),  # a client frame
        (encode(Ok(rid=1)) + b"\x00" * 70_000, FrameTooLarge),
        (msgpack.packb({"t": "deliver", "seq": "1"}), ProtocolError),
    ],
)
def test_bytes_that_are_not_a_server_frame_raise_the_protocol_error_family(
    data: bytes | str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        opened().receive(data)


def test_hello_resumes_from_the_cursor_and_the_inbox_version() -> None:
    s = ClientSession(cursor=7, inbox_ver=3)
    s.connect("token", DEVICE)
    assert sent(s) == [Hello(token="token", device=DEVICE, resume=7, inbox_ver=3)]
    assert s.receive(encode(WELCOME)) == WELCOME
    assert s.receive(encode(InboxState(ver=9, changes=()))) == InboxState(ver=9, changes=())
    assert s.inbox_applied(9) == 9
    assert s.inbox_applied(4) == 9  # an older version never moves it back
    s.connection_lost()
    s.connect("token", DEVICE)
    assert sent(s) == [Hello(token="token", device=DEVICE, resume=7, inbox_ver=9)]


def test_an_error_instead_of_welcome_refuses_the_hello() -> None:
    s = ClientSession()
    s.connect("token", DEVICE)
    refusal = Error(code="unauthorized", message="bad token")
    assert s.receive(encode(refusal)) == HelloRefused(refusal)


def test_a_ping_is_answered_with_a_pong_and_neither_reaches_the_caller() -> None:
    s = opened()
    assert s.receive(encode(Ping(ts=42))) is None
    assert s.receive(encode(Pong(ts=1))) is None
    assert sent(s) == [Pong(ts=42)]


@pytest.mark.parametrize("frame", [Revoke(ids=("m1",)), GoAway(reconnect_ms=5)])
def test_revoke_and_goaway_pass_through(frame: Frame) -> None:
    assert opened().receive(encode(frame)) == frame


# --- requests and their answers (§4) ------------------------------------------------------------

# Each case: requests sent (the entries each carries), answers received, events expected,
# entries still in flight afterwards.
ANSWERS: list[tuple[str, list[tuple[int, ...]], list[Frame], list[Any], set[int]]] = [
    ("ok answers the request with its rid",
     [(1,), (2, 3)], [Ok(rid=2)], [RequestAnswered(2, (2, 3))], {1}),
    ("answers out of order each find their request",
     [(1,), (2,), (3,)], [Ok(rid=3), Ok(rid=1), Ok(rid=2)],
     [RequestAnswered(3, (3,)), RequestAnswered(1, (1,)), RequestAnswered(2, (2,))], set()),
    ("an error with a rid fails that request only",
     [(1,), (2,)], [Error(code="internal", message="m", rid=1)],
     [RequestFailed(Error(code="internal", message="m", rid=1), (1,))], {2}),
    ("an error without a rid fails no request",
     [(1,)], [Error(code="rate_limited", message="m")],
     [RequestFailed(Error(code="rate_limited", message="m"), ())], {1}),
    ("an ok for no request in flight is ignored",
     [(1,)], [Ok(rid=9)], [None], {1}),
    ("a request is answered once",
     [(1,)], [Ok(rid=1), Ok(rid=1), Error(code="internal", message="m", rid=1)],
     [RequestAnswered(1, (1,)), None, RequestFailed(Error(code="internal", message="m", rid=1),
                                                    ())], set()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "requests", "answers", "events", "in_flight"), ANSWERS, ids=[a[0] for a in ANSWERS]
)
def test_ok_and_error_are_matched_to_the_request_by_rid(
    name: str,
    requests: list[tuple[int, ...]],
    answers: list[Frame],
    events: list[Any],
    in_flight: set[int],
) -> None:
    s = opened()
    rids = [s.send_request(identify, entries) for entries in requests]
    assert rids == list(range(1, len(requests) + 1))
    assert [f.rid for f in sent(s) if isinstance(f, Identify)] == rids
    assert [s.receive(encode(a)) for a in answers] == events
    assert s.in_flight() == in_flight


def test_a_request_is_built_with_the_rid_the_session_chose() -> None:
    s = opened()
    rid = s.send_request(lambda rid: Prefs(rid=rid, categories={"marketing": False}), [4])
    assert sent(s) == [Prefs(rid=rid, categories={"marketing": False})]


def test_a_resend_after_reconnect_keeps_its_rid_mapping_right() -> None:
    s = opened()
    first = s.send_request(identify, [7])
    other = s.send_request(identify, [8])
    assert s.receive(encode(Ok(rid=other))) == RequestAnswered(other, (8,))
    s.connection_lost()
    assert s.in_flight() == set()  # unanswered: the caller sends entry 7 again
    assert s.send_request(identify, [7]) is None  # no connection, nothing sent
    s.connect("token", DEVICE)
    s.receive(encode(WELCOME))
    again = s.send_request(identify, [7])
    assert again is not None and again not in (first, other)  # rids never repeat
    assert s.in_flight() == {7}
    # An answer to the old rid settles nothing; the one to the new rid settles entry 7.
    assert s.receive(encode(Ok(rid=first))) is None
    assert s.receive(encode(Ok(rid=again))) == RequestAnswered(again, (7,))
    assert s.in_flight() == set()


def test_a_retried_request_gets_a_new_rid_on_the_same_connection() -> None:
    s = opened()
    rid = s.send_request(identify, [5])
    error = Error(code="internal", message="disk full", rid=rid)
    assert s.receive(encode(error)) == RequestFailed(error, (5,))
    retry = s.send_request(identify, [5])
    assert retry == rid + 1
    assert s.receive(encode(Ok(rid=retry))) == RequestAnswered(retry, (5,))


# --- deliveries and acks (§3) -------------------------------------------------------------------

# Each case: the stored cursor, the (seq, message id) delivered, what is handed up as
# (seq, duplicate), the ids the caller had recorded before.
DELIVERIES: list[tuple[str, int, list[tuple[int, str]], list[tuple[int, bool]], set[str]]] = [
    ("in order, gaps in the numbering are normal",
     0, [(1, "a"), (2, "b"), (5, "c")], [(1, False), (2, False), (5, False)], set()),
    ("a seq received before is dropped",
     0, [(1, "a"), (1, "a"), (2, "b"), (2, "b")], [(1, False), (2, False)], set()),
    ("a lower seq after a higher one is dropped",
     0, [(3, "c"), (2, "b")], [(3, False)], set()),
    ("what resume acknowledged is dropped",
     5, [(4, "d"), (5, "e"), (6, "f")], [(6, False)], set()),
    ("a message seen before under another seq is a duplicate",
     0, [(1, "a"), (2, "x")], [(1, False), (2, True)], {"x"}),
    ("a message handed up and not yet processed is a duplicate",
     0, [(1, "a"), (2, "a")], [(1, False), (2, True)], set()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "cursor", "frames", "handed_up", "seen"), DELIVERIES, ids=[d[0] for d in DELIVERIES]
)
def test_deliveries_are_handed_up_in_order_and_repeats_are_dropped(
    name: str,
    cursor: int,
    frames: list[tuple[int, str]],
    handed_up: list[tuple[int, bool]],
    seen: set[str],
) -> None:
    s = opened(cursor=cursor, seen=seen.__contains__)
    events = [s.receive(deliver(seq, msg_id)) for seq, msg_id in frames]
    got = [(e.seq, e.duplicate) for e in events if isinstance(e, Delivery)]
    assert got == handed_up
    assert all(isinstance(e, Delivery) or e is None for e in events)


# Each case: the seqs handed up, the order they are processed in, the cursor after each.
ACKS: list[tuple[str, list[int], list[int], list[int]]] = [
    ("in order", [1, 2, 3], [1, 2, 3], [1, 2, 3]),
    ("a later one processed first waits for the earlier", [2, 4, 7], [4, 2, 7], [0, 4, 7]),
    ("the cursor jumps the gaps in the numbering", [3, 9], [3, 9], [3, 9]),
    ("the last one first", [1, 2, 3], [3, 2, 1], [0, 0, 3]),
    ("processing twice changes nothing", [1, 2], [1, 1, 2], [1, 1, 2]),
]


@pytest.mark.parametrize(
    ("name", "delivered", "processed", "cursors"), ACKS, ids=[a[0] for a in ACKS]
)
def test_acks_cover_the_highest_contiguous_processed_seq(
    name: str, delivered: list[int], processed: list[int], cursors: list[int]
) -> None:
    s = opened()
    for seq in delivered:
        s.receive(deliver(seq))
    got, acks = [], []
    for seq in processed:
        got.append(s.processed(seq))
        if s.ack():
            acks.append(s.cursor)
    assert got == cursors
    assert acks == sorted(set(c for c in cursors if c))
    assert [f.seq for f in sent(s) if isinstance(f, Ack)] == acks
    assert not s.ack()  # nothing new to tell


def test_resume_counts_as_an_ack_and_nothing_is_acked_without_a_connection() -> None:
    s = opened(cursor=4)
    assert not s.ack()  # hello.resume told the server about 4 already
    s.receive(deliver(5))
    s.processed(5)
    s.connection_lost()
    assert not s.ack()
    s.connect("token", DEVICE)
    assert sent(s) == [Hello(token="token", device=DEVICE, resume=5)]
    s.receive(encode(WELCOME))
    assert not s.ack()


def test_a_delivery_never_processed_comes_again_after_a_reconnect() -> None:
    recorded: set[str] = set()
    s = opened(seen=recorded.__contains__)
    s.receive(deliver(1))
    s.receive(deliver(2))
    s.processed(1)
    recorded.add("m2")  # recorded, but the connection fell before it was marked processed
    s.connection_lost()
    s.connect("token", DEVICE)
    assert sent(s) == [Hello(token="token", device=DEVICE, resume=1)]
    s.receive(encode(WELCOME))
    s.processed(2)  # late: it belonged to the old connection, and comes again
    assert s.cursor == 1
    assert s.receive(deliver(2)) == Delivery(2, Message(id="m2", kind="inbox", title="t",
                                                        body="b"), duplicate=True)  # fmt: skip
    assert s.processed(2) == 2


# --- both sides in memory -----------------------------------------------------------------------


def test_a_client_and_a_server_session_talk_without_sockets() -> None:
    client, server = ClientSession(), ServerSession()
    msg = Message(id="m1", kind="inbox", title="t", body="b")

    def to_server() -> list[Frame]:
        return [server.receive(d) for d in client.data_to_send()]

    def to_client() -> list[Any]:
        return [client.receive(d) for d in server.data_to_send()]

    client.connect("token", DEVICE)
    assert to_server() == [Hello(token="token", device=DEVICE)]
    server.send(WELCOME)
    server.end_replay()
    server.deliver(1, encode_message(msg))
    assert to_client() == [WELCOME, Delivery(1, msg, duplicate=False)]
    client.processed(1)
    rid = client.send_request(lambda rid: Events(rid=rid, events=()), [1])
    assert client.ack()
    assert to_server() == [Events(rid=rid, events=()), Ack(seq=1)]
    server.send(Ok(rid=rid))
    server.send(Ping(ts=3))
    assert to_client() == [RequestAnswered(rid, (1,)), None]
    assert to_server() == [Pong(ts=3)]
