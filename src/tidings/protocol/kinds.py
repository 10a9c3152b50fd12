"""Message kinds: the one table every part reads (PROTOCOL.md §Message, "kind").

A kind says where a message shows on the device. Everything that depends on it — which kinds
need a device, which are kept in the user's inbox, which show as an overlay and how, which
receipts and funnel stages apply, how many buttons fit, which content limits and lifetime apply —
is a column here, so a new kind is a new row, not a hunt through the code base.

Kinds may grow (PROTOCOL.md §6): a client that receives a kind it does not know keeps the
message as inbox content and acks it (:data:`UNKNOWN_KIND_READS_AS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from tidings.protocol import limits

__all__ = [
    "KINDS",
    "NAMES",
    "UNKNOWN_KIND_READS_AS",
    "KindName",
    "KindRules",
    "Overlay",
    "rules",
]

KindName = Literal["banner", "inbox", "both", "modal"]
"""The kinds this version knows. The only place they are spelled out (the table below is
checked against it at import)."""

Overlay = Literal["banner", "modal"]
"""How a kind shows over the app: a banner (a toast; several may queue) or a modal (a centred
overlay that waits for the user, one at a time)."""

NAMES: tuple[KindName, ...] = get_args(KindName)

UNKNOWN_KIND_READS_AS: KindName = "inbox"
"""What a client does with a kind it does not know: keep it as inbox content (and ack it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KindRules:
    """What one kind means, for every part of Tidings.

    Attributes:
        name: The wire value.
        overlay: How it shows over the app (None: it only goes to the inbox list).
        inbox: Kept in the user's inbox (every device of the user, the inbox list, read state).
        max_actions: At most this many buttons.
        funnel: Its stats funnel, first stage first.
        description: One line for people (admin API schema, CLI help, composer).
    """

    name: KindName
    overlay: Overlay | None
    inbox: bool
    max_actions: int
    funnel: tuple[str, ...]
    description: str

    @property
    def needs_device(self) -> bool:
        """Shows only on a device that is there: a user with no device yet gets nothing (an
        inbox kind waits in the user's inbox for the first device)."""
        return not self.inbox

    @property
    def receipts(self) -> frozenset[str]:
        """The receipt kinds a device sends for it (PROTOCOL.md §Receipt)."""
        shown = {"displayed", "clicked", "dismissed", "expired"} if self.overlay else set()
        return frozenset(shown | ({"clicked"} if self.inbox else set()))

    @property
    def short_lived(self) -> bool:
        """Uses the app's banner lifetime (an overlay nobody keeps), not the inbox one."""
        return not self.inbox

    def limits(self, banner: tuple[int, int], inbox: tuple[int, int]) -> tuple[int, int]:
        """``(title_max, body_max)`` from the app's overlay and inbox limits: a kind that shows
        both ways must fit both."""
        if not self.inbox:
            return banner
        if self.overlay is None:
            return inbox
        return min(banner[0], inbox[0]), min(banner[1], inbox[1])


KINDS: dict[str, KindRules] = {
    k.name: k
    for k in (
        KindRules(
            name="banner", overlay="banner", inbox=False, max_actions=limits.MAX_ACTIONS,
            funnel=("delivered", "displayed", "clicked", "dismissed"),
            description="a banner over the app, on devices online or coming online",
        ),
        KindRules(
            name="inbox", overlay=None, inbox=True, max_actions=limits.MAX_ACTIONS,
            funnel=("delivered", "read", "clicked"),
            description="kept in the user's inbox on every device, no banner",
        ),
        KindRules(
            name="both", overlay="banner", inbox=True, max_actions=limits.MAX_ACTIONS,
            funnel=("delivered", "displayed", "read", "clicked", "dismissed"),
            description="a banner, and kept in the user's inbox",
        ),
        KindRules(
            name="modal", overlay="modal", inbox=False, max_actions=2,
            funnel=("delivered", "displayed", "clicked", "dismissed"),
            description="a centred overlay with up to two buttons, one at a time",
        ),
    )
}  # fmt: skip
"""Every kind this version knows, by wire value."""

if tuple(KINDS) != NAMES:  # pragma: no cover - a table out of step with KindName
    raise AssertionError(f"kinds table {tuple(KINDS)} differs from KindName {NAMES}")


def rules(kind: str) -> KindRules:
    """The rules of ``kind``; a kind this version does not know reads as
    :data:`UNKNOWN_KIND_READS_AS` (forward compatibility, PROTOCOL.md §6)."""
    return KINDS.get(kind) or KINDS[UNKNOWN_KIND_READS_AS]
