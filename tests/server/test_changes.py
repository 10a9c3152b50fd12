"""Changes between the nodes of a cluster: typed values with the feed's wire form."""

from __future__ import annotations

import msgpack
import pytest

from tidings.server.changes import (
    AttrsChanged,
    CampaignChanged,
    Change,
    ConsentChanged,
    DeviceSeen,
    EventsStored,
    SettingsReplaced,
    TagRuleChanged,
    UserErased,
    decode,
    encode,
)

EVERY: list[Change] = [
    EventsStored("demo", "u1", [("view", {"sku": "x"}, 1.5)]),
    AttrsChanged("demo", "u1", {"age": 30, "gone": None}),
    ConsentChanged("demo", "u1", {"marketing": False}),
    DeviceSeen("demo", "~d1", {"tz": "Asia/Shanghai", "locale": "zh-CN"}),
    UserErased("demo", "u1"),
    CampaignChanged("demo", "spring"),
    TagRuleChanged("demo", "sports_fan"),
    SettingsReplaced("demo"),
]


@pytest.mark.parametrize("change", EVERY, ids=lambda c: c.TAG)
def test_every_change_reads_back_as_written(change: Change) -> None:
    assert decode(encode(change)) == change


def test_the_wire_form_is_the_tag_then_the_fields_in_order() -> None:
    # What nodes of the previous version write and read: a cluster upgrades one node at a time.
    assert msgpack.unpackb(encode(UserErased("demo", "u1"))) == ["erase", "demo", "u1"]
    old = msgpack.packb(["events", "demo", "u1", [["buy", {"total": 5}, 2.0]]])
    assert decode(old) == EventsStored("demo", "u1", [("buy", {"total": 5}, 2.0)])
    assert decode(msgpack.packb(["settings", "demo", ""])) == SettingsReplaced("demo")


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # not MessagePack
        msgpack.packb(["hologram", "demo", "u1"]),  # a change of a later version
        msgpack.packb(["erase", "demo"]),  # a field short
        msgpack.packb(["erase", "demo", "u1", "extra"]),
        msgpack.packb(["erase", 7, "u1"]),
        msgpack.packb(["events", "demo", "u1", [["buy"]]]),
        msgpack.packb({"t": "erase"}),
    ],
)
def test_a_malformed_or_unknown_change_is_refused_with_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode(body)
