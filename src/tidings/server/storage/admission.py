"""Which sends of an outcome still fit their limits and the campaign's budget.

The one rule every store applies inside its commit, once it has read, under its locks, how
many stored sends count toward each limit and how much budget is left: sends are taken in
order, each counting toward the limits of the sends after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tidings.protocol import kinds
from tidings.server.errors import CampaignInactive, ClaimLost, SettingsChanged
from tidings.server.storage.rows import (
    DecisionRow,
    Limit,
    Outcome,
    OutMessage,
    Progress,
    Refusal,
    SendRow,
)

__all__ = [
    "CONSENTLESS",
    "Counts",
    "admit",
    "campaign_users",
    "consent_checks",
    "forget_erased",
    "inbox_users",
    "kept_messages",
    "logged_decisions",
    "merged_attrs",
    "require_progress",
    "require_running",
    "require_settings",
    "settings_fingerprint",
]

Counts = dict[tuple[Limit, float, str], int]
"""Stored sends that count toward a limit, by (limit, the send's time, user)."""


def require_running(campaign: str, status: str | None) -> None:
    """A campaign's sends commit only while its stored status (read under the commit's lock)
    is ``running``, whatever the sending node last heard; ``status`` None: no such row.

    Raises:
        CampaignInactive: paused, cancelled, completed or a draft; nothing is stored.
    """
    if status is not None and status != "running":
        raise CampaignInactive(campaign, status)


def settings_fingerprint(spec: Mapping[str, Any] | None) -> str:
    """A short digest of an app's stored settings document ("" for none stored)."""
    if spec is None:
        return ""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def require_settings(app: str, expected: str | None, stored: str | None) -> None:
    """Sends decided under settings ``expected`` (a fingerprint; None: unchecked) commit only
    while the stored settings document (``stored``: its JSON, read in the commit; None: none)
    is the same.

    Raises:
        SettingsChanged: they differ; nothing is stored.
    """
    if expected is not None and expected != settings_fingerprint(
        None if stored is None else json.loads(stored)
    ):
        raise SettingsChanged(app)


def require_progress(moved: bool, progress: Progress, claim: str | None) -> None:
    """A chunk's cursor moves only on a row its scheduler still holds (``moved``: the fenced
    update found it).

    Raises:
        ClaimLost: another scheduler took the row after this one's lease; nothing is stored.
    """
    if not moved:
        raise ClaimLost(
            f"pending work: row {progress.pending_id} is no longer claimed by {claim!r};"
            " nothing of this chunk was stored"
        )


CONSENTLESS = frozenset({"transactional"})
"""Categories no user can refuse: never checked against consent."""


def consent_checks(sends: Sequence[SendRow]) -> dict[str, list[str]]:
    """Per category a user may refuse, the users of ``sends`` whose stored consent the commit
    must read (:func:`admit`'s ``opted_out``)."""
    out: dict[str, list[str]] = {}
    for s in sends:
        if s.category not in CONSENTLESS:
            out.setdefault(s.category, []).append(s.user_key)
    return {c: sorted(set(users)) for c, users in out.items()}


def campaign_users(outcome: Outcome) -> list[str]:
    """The users a campaign's commit writes about (sends, decisions, pending work): each must
    still have a profile in the store, or it was erased (:func:`forget_erased`). Empty for a
    commit of no campaign: a direct send may go to a user the store has not seen yet."""
    if outcome.campaign is None:
        return []
    users = {s.user_key for s in outcome.sends} | {d.user_key for d in outcome.decisions}
    users |= {p.user_key for p in outcome.new_pending if p.user_key is not None}
    return sorted(users)


def forget_erased(
    outcome: Outcome, messages: Sequence[OutMessage], erased: Collection[str]
) -> tuple[Outcome, list[OutMessage]]:
    """Drop everything about ``erased`` users from a commit: their sends, decisions and
    pending work, and the messages made only for them. A node whose view still held a user
    erased elsewhere writes nothing that would bring them back (every write path that
    registers a user stores their profile first, so an audience's user with no stored
    profile was erased)."""
    if not erased:
        return outcome, list(messages)
    gone = set(erased)
    sends = [s for s in outcome.sends if s.user_key not in gone]
    dropped = {s.message_id for s in outcome.sends if s.user_key in gone}
    dropped -= {s.message_id for s in sends}
    kept = replace(
        outcome,
        sends=sends,
        decisions=[d for d in outcome.decisions if d.user_key not in gone],
        new_pending=[p for p in outcome.new_pending if p.user_key not in gone],
    )
    return kept, [
        replace(m, targets=tuple(t for t in m.targets if t[1] not in gone),
                waiting=tuple(u for u in m.waiting if u not in gone))
        for m in messages if m.message_id not in dropped
    ]  # fmt: skip


def admit(
    outcome: Outcome,
    budget_left: int | None,
    counts: Counts,
    opted_out: Mapping[str, Collection[str]] | None = None,
) -> tuple[list[SendRow], list[Refusal]]:
    """Split ``outcome.sends`` into those every limit and the budget still allow, and refusals.

    ``opted_out``: per category, the users whose *stored* consent refuses it (read in the
    commit; a node's view of consent may be stale): their sends are refused ``opted_out``.
    ``counts`` grows with each send accepted, in order. When several limits are reached, the
    one with the longest window is reported: it keeps the user capped longest.
    """
    opted_out = opted_out or {}
    mine: dict[str, dict[tuple[Limit, float], int]] = {}
    for (limit, at, user), n in counts.items():
        mine.setdefault(user, {})[(limit, at)] = n
    accepted: list[SendRow] = []
    refused: list[Refusal] = []
    for s in outcome.sends:
        per_user = mine.setdefault(s.user_key, {})
        refusal = None
        if s.user_key in opted_out.get(s.category, ()):
            refusal = Refusal(user_key=s.user_key, message_id=s.message_id, reason="opted_out",
                              detail=f"the user opted out of {s.category} messages")  # fmt: skip
        elif budget_left is not None and s.campaign == outcome.campaign and budget_left <= 0:
            refusal = Refusal(user_key=s.user_key, message_id=s.message_id,
                              reason="budget_exhausted",
                              detail=f"budget of {outcome.budget} used")  # fmt: skip
        else:
            reached = [x for x in s.limits if per_user.get((x, s.at), 0) >= x.limit]
            if reached:
                limit = max(reached, key=lambda x: x.window_s or float("inf"))
                refusal = Refusal(user_key=s.user_key, message_id=s.message_id,
                                  reason=limit.reason, detail=limit.detail)  # fmt: skip
        if refusal is not None:
            refused.append(refusal)
            continue
        accepted.append(s)
        if budget_left is not None and s.campaign == outcome.campaign:
            budget_left -= 1
        for limit, at in list(per_user):
            within = limit.window_s is None or at - limit.window_s < s.at
            if within and limit.counts(s.category, s.campaign):
                per_user[(limit, at)] += 1
    return accepted, refused


def inbox_users(m: OutMessage, refused: set[tuple[str, str]]) -> list[str]:
    """The users whose inbox keeps ``m``: its accepted recipients, with or without a device
    (none for a banner-only message)."""
    if not kinds.rules(m.fields.get("kind", "")).inbox:
        return []
    users = [u for _, u in m.targets] + list(m.waiting)
    return [u for u in dict.fromkeys(users) if (m.message_id, u) not in refused]


def kept_messages(
    messages: Sequence[OutMessage],
    outcome: Outcome,
    sends: Sequence[SendRow],
    refused: Sequence[Refusal],
) -> list[tuple[OutMessage, list[str]]]:
    """The messages a commit stores, each with the devices it goes to.

    A message all of whose sends were refused is not stored; one with no sends (a direct send
    to devices with nothing counted) or an accepted send is, for its accepted users' devices.
    """
    refused_keys = {(r.message_id, r.user_key) for r in refused}
    sent_ids = {s.message_id for s in sends}
    asked_ids = {s.message_id for s in outcome.sends}
    return [
        (m, [d for d, u in m.targets if (m.message_id, u) not in refused_keys])
        for m in messages
        if m.message_id in sent_ids or m.message_id not in asked_ids
    ]


def logged_decisions(
    outcome: Outcome, sends: Sequence[SendRow], refused: Sequence[Refusal]
) -> list[DecisionRow]:
    """What a commit writes to the decision log, in order: the outcome's own decisions, then
    each accepted send's, then each refused send's with the reason the store refused it."""
    decisions = list(outcome.decisions)
    decisions += [s.decision for s in sends if s.decision is not None]
    why = {(r.message_id, r.user_key): r for r in refused}
    for s in outcome.sends:
        r = why.get((s.message_id, s.user_key))
        if r is not None and s.decision is not None:
            decisions.append(replace(s.decision, reason=r.reason, detail=r.detail, message_id=None))
    return decisions


def merged_attrs(stored: str | None, changes: Mapping[str, Any]) -> dict[str, Any]:
    """A profile's attributes (``stored`` as JSON, or None) with ``changes`` merged in: a
    value sets its key, ``None`` removes it."""
    merged: dict[str, Any] = json.loads(stored) if stored is not None else {}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
