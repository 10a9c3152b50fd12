"""The message kinds table: one row per kind, read by every part (SPEC §2, PROTOCOL.md §6)."""

from __future__ import annotations

import pytest

from tidings.protocol import kinds
from tidings.protocol.frames import KINDS, RECEIPT_KINDS, Message


def test_the_table_has_a_row_for_every_kind_the_wire_knows() -> None:
    assert tuple(kinds.KINDS) == kinds.NAMES
    assert frozenset(kinds.NAMES) == KINDS
    assert {"banner", "inbox", "both", "modal"} <= KINDS


@pytest.mark.parametrize(
    ("kind", "overlay", "inbox", "needs_device"),
    [
        ("banner", "banner", False, True),
        ("inbox", None, True, False),
        ("both", "banner", True, False),
        ("modal", "modal", False, True),
    ],
)
def test_each_kind_says_where_it_shows_and_whether_it_needs_a_device(
    kind: str, overlay: str | None, inbox: bool, needs_device: bool
) -> None:
    rules = kinds.KINDS[kind]
    assert (rules.overlay, rules.inbox, rules.needs_device) == (overlay, inbox, needs_device)
    assert rules.short_lived is needs_device  # overlay-only kinds use the banner lifetime
    assert rules.receipts <= RECEIPT_KINDS
    assert rules.funnel[0] == "delivered"


def test_a_modal_has_at_most_two_buttons_and_the_overlay_receipts() -> None:
    modal = kinds.KINDS["modal"]
    assert modal.max_actions == 2
    assert modal.receipts == {"displayed", "clicked", "dismissed", "expired"}
    assert kinds.KINDS["inbox"].receipts == {"clicked"}


def test_limits_follow_where_a_kind_shows() -> None:
    banner, inbox = (40, 120), (60, 2000)
    assert kinds.KINDS["banner"].limits(banner, inbox) == banner
    assert kinds.KINDS["modal"].limits(banner, inbox) == banner
    assert kinds.KINDS["inbox"].limits(banner, inbox) == inbox
    assert kinds.KINDS["both"].limits(banner, inbox) == (40, 120)
    assert kinds.KINDS["both"].limits((80, 100), (60, 2000)) == (60, 100)


def test_a_kind_this_version_does_not_know_reads_as_inbox_everywhere() -> None:
    assert kinds.rules("hologram") is kinds.KINDS[kinds.UNKNOWN_KIND_READS_AS]
    assert kinds.rules("hologram").name == "inbox"
    wire = {"id": "m", "kind": "hologram", "title": "t", "body": "b"}
    assert Message.from_wire(wire).kind == "inbox"
    assert Message.from_wire({**wire, "kind": "modal"}).kind == "modal"
