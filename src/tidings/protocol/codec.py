"""MessagePack encoding and safe decoding of frames (PROTOCOL.md §Encoding).

This is the only module that calls msgpack. Decoding untrusted bytes raises nothing but
:class:`~tidings.protocol.errors.ProtocolError` subclasses: the unpacker runs with explicit caps
on string, binary, array, map and extension sizes, and every msgpack or Unicode failure is
translated here.
"""

from __future__ import annotations

from typing import Any, cast

import msgpack

from tidings.protocol import limits
from tidings.protocol.errors import FrameTooLarge, MalformedFrame
from tidings.protocol.frames import (
    CLIENT_FRAMES,
    SERVER_FRAMES,
    ClientFrame,
    Frame,
    Message,
    ServerFrame,
    frame_from_wire,
)

__all__ = [
    "decode_client",
    "decode_map",
    "decode_server",
    "encode",
    "encode_deliver",
    "encode_message",
]

_PACK_T = msgpack.packb("t") + msgpack.packb("deliver")
_PACK_SEQ = msgpack.packb("seq")
_PACK_MSG = msgpack.packb("msg")


def encode(frame: Frame) -> bytes:
    """Encode one frame to the bytes of one binary WebSocket message."""
    return cast(bytes, msgpack.packb(frame.to_wire(), use_bin_type=True))


def encode_message(msg: Message) -> bytes:
    """Encode a message body once, to be spliced into many ``deliver`` frames."""
    return cast(bytes, msgpack.packb(msg.to_wire(), use_bin_type=True))


def encode_deliver(seq: int, msg_bytes: bytes) -> bytes:
    """Build a ``deliver`` frame from a sequence number and a pre-encoded message.

    The result is byte-for-byte what ``encode(Deliver(seq=seq, msg=msg))`` gives, without
    re-encoding the message for every device of a fan-out.
    """
    # 0x83: fixmap with three entries, keys in the same order as Deliver.to_wire().
    packed_seq: bytes = msgpack.packb(seq)
    frame: bytes = b"\x83" + _PACK_T + _PACK_SEQ + packed_seq + _PACK_MSG + msg_bytes
    return frame


def decode_map(data: bytes, *, max_size: int = limits.MAX_FRAME_BYTES) -> Any:
    """Decode one MessagePack value from untrusted bytes with every size cap applied.

    Raises:
        FrameTooLarge: ``data`` is longer than ``max_size``.
        MalformedFrame: not exactly one valid MessagePack value, bad UTF-8, or nested too
            deep for the decoder (hundreds of levels; shallower excess depth is
            ``InvalidField`` from the frame checks, PROTOCOL.md §6).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedFrame(f"frames are binary messages, got {type(data).__name__}")
    if len(data) > max_size:
        raise FrameTooLarge(f"frame is {len(data)} bytes, the limit is {max_size}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=limits.MAX_CONTAINER_LEN,
            max_map_len=limits.MAX_CONTAINER_LEN,
            max_ext_len=0,
        )
    except UnicodeDecodeError as exc:
        raise MalformedFrame(f"string is not valid UTF-8 at byte {exc.start}") from None
    except msgpack.ExtraData:
        raise MalformedFrame("trailing bytes after the frame") from None
    except (msgpack.StackError, RecursionError):
        # Hundreds of levels: past what the decoder reads at all, so not a frame (§6, §9).
        raise MalformedFrame("nests too deep to decode") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # ValueError covers truncated input, over-cap lengths and non-string map keys; the
        # message from msgpack is short and safe to pass on.
        detail = str(exc)[:120] or type(exc).__name__
        raise MalformedFrame(f"not a valid MessagePack frame: {detail}") from None


def decode_client(data: bytes, *, max_size: int = limits.MAX_FRAME_BYTES) -> ClientFrame:
    """Decode a frame sent by a client (the gateway's side)."""
    return cast(ClientFrame, frame_from_wire(decode_map(data, max_size=max_size), CLIENT_FRAMES))


def decode_server(data: bytes, *, max_size: int = limits.MAX_FRAME_BYTES) -> ServerFrame:
    """Decode a frame sent by the server (the SDK's side)."""
    return cast(ServerFrame, frame_from_wire(decode_map(data, max_size=max_size), SERVER_FRAMES))
