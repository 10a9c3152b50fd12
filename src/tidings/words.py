"""The decision log in words: what ``tidings why`` prints and the simulator's device view shows.

Reasons and what happened after a send are the gateway's codes (``GET
/v1/campaigns/{id}/decisions``); here each becomes a phrase, and each time a local time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any

__all__ = ["AFTER", "REASONS", "decision_lines", "decision_words", "local_time"]

REASONS: dict[str, str] = {
    "sent": "sent",
    "scheduled": "scheduled to be sent later",
    "not_in_segment": "not in the campaign's segment",
    "not_triggered": "not triggered yet",
    "opted_out": "the user opted out of this category of messages",
    "capped_tier": "the frequency cap of the user's value tier was reached",
    "capped_lifecycle": "the frequency cap of the user's lifecycle stage was reached",
    "capped_campaign": "the campaign's cap per user was reached",
    "capped_gap": "too soon after the user's previous message",
    "holdout": "in the holdout (control) group: left out on purpose to measure the lift",
    "budget_exhausted": "the campaign's budget was used up",
    "outside_send_window": "outside the campaign's send window",
    "outside_trigger_window": "the trigger event came outside the trigger's time window",
    "trigger_filter": "the trigger event did not pass the trigger's filter",
    "unless_matched": "the cancelling event followed the trigger in time",
    "campaign_inactive": "the campaign was not running",
    "template_error": "the message could not be rendered for this user",
    "too_large": "the rendered message was too large to deliver",
    "expired": "the message expired before it could be sent",
    "collapsed": "replaced by a newer message with the same collapse key",
    "revoked": "the message was revoked",
    "no_device": "the user has no device for a banner",
}
"""Each decision log reason in words."""

AFTER: dict[str, str] = {
    "delivered": "delivered to {device}",
    "displayed": "displayed on {device}",
    "clicked": "clicked on {device}",
    "dismissed": "dismissed on {device}",
    "expired": "expired unseen on {device}",
    "read": "read in the inbox",
    "unread": "marked unread in the inbox",
    "deleted": "deleted from the inbox",
}


def local_time(ts: float, zone: tzinfo | None) -> str:
    """``ts`` (seconds) in ``zone``, to the millisecond: ``2026-12-06T23:00:00.000+08:00``."""
    return datetime.fromtimestamp(ts, zone).isoformat(timespec="milliseconds")


def decision_words(d: Mapping[str, Any]) -> tuple[str, list[tuple[float | None, str]]]:
    """One decision (as the gateway lists it) in words: its reason and detail, then what
    happened to its message after, each (time or None, words), oldest first."""
    reason, detail = d["reason"], d.get("detail") or ""
    said = REASONS.get(reason, reason)
    variant = f" [variant {d['variant']}]" if d.get("variant") else ""
    if reason == "sent":
        head = f"sent{variant}: message {d['message_id']}" + (f" ({detail})" if detail else "")
    else:
        head = f"{reason}{variant}: {said}" + (f" — {detail}" if detail else "")
    after: list[tuple[float | None, str]] = []
    for step in d.get("after", []):
        what = AFTER.get(step["what"], step["what"]).format(device=step.get("device") or "?")
        if step.get("action"):
            what += f" (action {step['action']})"
        after.append((step["at"], what))
    if reason == "sent" and "after" in d and not d["after"]:
        after.append((None, "no device has acknowledged it yet"))
    return head, after


def decision_lines(d: Mapping[str, Any], zone: tzinfo | None) -> list[str]:
    """One decision as ``tidings why`` prints it: its time and words, then one indented line
    per thing that happened after (:func:`decision_words`)."""
    head, after = decision_words(d)
    return [f"{local_time(d['at'], zone)}  {head}"] + [
        f"    {local_time(at, zone)}  {what}" if at is not None else f"    {what}"
        for at, what in after
    ]
