# ruff: noqa: E501  (hypothesis strategies and tables read best one per line)
"""Frames round-trip, and decoding untrusted bytes only ever raises ProtocolError."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.protocol import limits
from tidings.protocol.codec import (
    decode_client,
    decode_server,
    encode,
    encode_deliver,
    encode_message,
)
from tidings.protocol.errors import (
    FrameTooLarge,
    InvalidField,
    MalformedFrame,
    ProtocolError,
    UnknownFrame,
)
from tidings.protocol.frames import (
    CLIENT_FRAMES,
    SERVER_FRAMES,
    Ack,
    Action,
    Deliver,
    DeviceInfo,
    Error,
    Event,
    Events,
    GoAway,
    Hello,
    Identify,
    InboxChange,
    InboxState,
    InboxUpdate,
    Message,
    Ok,
    Ping,
    Pong,
    Prefs,
    Receipt,
    Revoke,
    Welcome,
)

ids = st.text(min_size=1, max_size=40)
ints = st.integers(0, limits.MAX_INT)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_maps = st.dictionaries(st.text(min_size=1, max_size=10), scalars, max_size=5)
messages = st.builds(
    Message,
    id=ids,
    kind=st.sampled_from(["banner", "inbox", "both"]),
    title=st.text(max_size=50),
    body=st.text(max_size=200),
    category=st.sampled_from(["marketing", "transactional"]),
    priority=st.sampled_from(["normal", "urgent"]),
    created_at=ints,
    expires_at=ints,
    sent_at=ints,
    campaign=st.none() | ids,
    variant=st.none() | ids,
    collapse_key=st.none() | ids,
    image=st.none() | ids,
    actions=st.lists(
        st.builds(Action, id=ids, label=ids, url=st.text(max_size=30)), max_size=3
    ).map(tuple),
    data=json_maps,
    expire_after_read=st.booleans(),
)
changes = st.lists(
    st.builds(InboxChange, id=ids, state=st.sampled_from(["read", "unread", "deleted"]), ver=ints),
    max_size=5,
).map(tuple)
client_frames = st.one_of(
    st.builds(
        Hello,
        token=ids,
        device=st.builds(DeviceInfo, platform=st.text(max_size=10), tz=st.text(max_size=10)),
        resume=ints,
        inbox_ver=ints,
    ),
    st.builds(
        Events,
        rid=ints,
        events=st.lists(
            st.builds(Event, id=ids, name=ids, ts=ints, props=json_maps), max_size=5
        ).map(tuple),
    ),
    st.builds(Identify, rid=ints, user=st.none() | ids, attrs=json_maps),
    st.builds(Ack, seq=ints),
    st.builds(
        Receipt,
        rid=ints,
        id=ids,
        kind=st.sampled_from(["displayed", "clicked", "dismissed"]),
        ts=ints,
        action=st.none() | ids,
    ),
    st.builds(InboxUpdate, rid=ints, changes=changes),
    st.builds(
        Prefs,
        rid=ints,
        categories=st.dictionaries(st.sampled_from(["marketing", "transactional"]), st.booleans()),
    ),
    st.builds(Ping, ts=ints),
    st.builds(Pong, ts=ints),
)
server_frames = st.one_of(
    st.builds(Welcome, session=ids, device=ids, user=st.none() | ids, server_time=ints, heartbeat_ms=ints, limits=st.dictionaries(st.text(min_size=1, max_size=10), ints, max_size=3)),
    st.builds(Deliver, seq=st.integers(1, limits.MAX_INT), msg=messages),
    st.builds(Ok, rid=ints),
    st.builds(Error, code=ids, message=st.text(max_size=50), rid=st.none() | ints),
    st.builds(Revoke, ids=st.lists(ids, max_size=5).map(tuple)),
    st.builds(InboxState, ver=ints, changes=changes),
    st.builds(GoAway, reconnect_ms=st.integers(0, 3_600_000), reason=st.text(max_size=20)),
    st.builds(Ping, ts=ints),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(client_frames)
def test_every_client_frame_round_trips(frame: object) -> None:
    assert decode_client(encode(frame)) == frame  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(server_frames)
def test_every_server_frame_round_trips(frame: object) -> None:
    assert decode_server(encode(frame)) == frame  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, limits.MAX_INT), messages)
def test_a_spliced_delivery_equals_an_encoded_one(seq: int, msg: Message) -> None:
    assert encode_deliver(seq, encode_message(msg)) == encode(Deliver(seq=seq, msg=msg))


def _decode_only_raises_protocol_errors(data: bytes) -> None:
    for decode in (decode_client, decode_server):
        try:
            decode(data)
        except ProtocolError as exc:
            assert exc.code and exc.reason
        except Exception as exc:  # pragma: no cover - this is the failure being looked for
            pytest.fail(f"{type(exc).__name__} escaped decoding {data[:40]!r}: {exc}")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    _decode_only_raises_protocol_errors(data)


anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip
frame_types = st.sampled_from(sorted({*CLIENT_FRAMES, *SERVER_FRAMES}))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_types, st.dictionaries(st.sampled_from(["token", "rid", "events", "seq", "msg", "id", "kind", "ts", "changes", "categories", "ids", "user", "attrs", "device", "ver", "code", "session", "limits", "v", "resume", "action"]), anything, max_size=6))  # fmt: skip
def test_plausible_frames_with_wrong_fields_raise_protocol_error(
    t: str, fields: dict[str, object]
) -> None:
    try:
        data = msgpack.packb({"t": t, **fields}, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError):
        return  # not encodable: nothing to send
    _decode_only_raises_protocol_errors(data)


@pytest.mark.parametrize(
    ("data", "error", "field"),
    [
        (b"\x00" * (limits.MAX_FRAME_BYTES + 1), FrameTooLarge, None),
        (b"\xc1", MalformedFrame, None),
        (msgpack.packb({"t": "hello", "token": "x"}) + b"\x00", MalformedFrame, None),
        (msgpack.packb({"t": "nope"}), UnknownFrame, None),
        (msgpack.packb({"t": "hello"}), InvalidField, "hello.token"),
        (msgpack.packb({"t": "hello", "token": b"x"}), InvalidField, "hello.token"),
        (msgpack.packb({"t": "ack", "seq": -1}), InvalidField, "ack.seq"),
        (msgpack.packb({"t": "ack", "seq": True}), InvalidField, "ack.seq"),
        (msgpack.packb({"t": "events", "rid": 1, "events": [{"id": "e", "name": "n", "ts": 1}] * 101}), InvalidField, "events.events"),
        (msgpack.packb({"t": "events", "rid": 1, "events": [{"id": "e", "name": "n", "ts": 1, "props": {"a": {"b": {"c": {"d": {"e": 1}}}}}}]}), InvalidField, "events.events[0].props"),
        (msgpack.packb({"t": "events", "rid": 1, "events": [{"id": "e", "name": "n", "ts": 1, "props": {"x": math.nan}}]}), InvalidField, "events.events[0].props.x"),
        (msgpack.packb({"t": "identify", "rid": 1, "attrs": {str(i): i for i in range(65)}}), InvalidField, "identify.attrs"),
        (msgpack.packb({"t": "prefs", "rid": 1, "categories": {"Spam!": True}}), InvalidField, "prefs.categories key"),
        (b"\x81\xa1t\xa2\xff\xfe", MalformedFrame, None),
        (b"\xdd\xff\xff\xff\xff", MalformedFrame, None),
        (b"\x91" * 5000, MalformedFrame, None),
    ],
)  # fmt: skip
def test_bad_frames_raise_the_documented_error_naming_the_field(
    data: bytes, error: type[ProtocolError], field: str | None
) -> None:
    with pytest.raises(error) as info:
        decode_client(data)
    if field is not None:
        assert info.value.reason.startswith(field)


def test_a_message_title_over_the_wire_limit_is_refused() -> None:
    msg = {"id": "m", "kind": "banner", "title": "x" * (limits.MAX_TITLE_LEN + 1), "body": ""}
    with pytest.raises(InvalidField, match=r"deliver\.msg\.title"):
        decode_server(msgpack.packb({"t": "deliver", "seq": 1, "msg": msg}))


def test_frames_are_decoded_one_message_at_a_time() -> None:
    stream = [Ping(ts=1), Ack(seq=3), Pong(ts=2)]
    assert [decode_client(encode(f)) for f in stream] == stream
    with pytest.raises(MalformedFrame, match="trailing"):
        decode_client(b"".join(encode(f) for f in stream))
