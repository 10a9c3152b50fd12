"""The campaign engine: campaigns run to decisions over the audience.

Who the users are — live profiles, behaviour tags, segment resolution — is the
:class:`~tidings.server.targeting.Audience` the engine owns (:attr:`CampaignEngine.audience`,
started with it). Behaviour events go through the engine: the audience updates the profile, then
the engine runs the triggers they fire. Everything else about users is told to the audience
directly.

A campaign turns into *decisions* (one per user each time the engine asks "may this user get
it now?") and messages. Everything a send decides — messages, deliveries, send records, the
decision log, pending work done or added, the campaign's sent total — is stored in one
group-committed write before anything goes on the wire, so a crash loses nothing and repeats
nothing. Work that waits (a delayed trigger, a user's local send time, a scheduled run) is a
row in ``pending_sends`` that :meth:`CampaignEngine.tick` picks up when due, also after a
restart.

The engine never touches sockets: it hands stored messages to :meth:`Node.publish`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tidings.protocol.errors import InvalidField, TidingsError
from tidings.protocol.frames import Action as WireAction
from tidings.protocol.frames import Message
from tidings.protocol.limits import MAX_FRAME_BYTES
from tidings.protocol.simtime import SimTime
from tidings.server.campaigns.capping import CapConfig, limits_for
from tidings.server.campaigns.model import (
    CONTROL,
    DEFAULT_CONVERSION_WINDOW_S,
    TRANSITIONS,
    Campaign,
    CampaignKind,
    CampaignStatus,
    Conversion,
    Decision,
    Overflow,
    Reason,
    RolloutFallback,
)
from tidings.server.campaigns.sendtime import SendPolicy, choose_send_time, next_local_time
from tidings.server.campaigns.stats import (
    RETENTION_WINDOWS,
    Cohort,
    Funnel,
    best_variant,
    campaign_stats,
)
from tidings.server.campaigns.templates import (
    ContentLimits,
    TemplateError,
    event_context,
    render_content,
    user_context,
    validate_campaign,
)
from tidings.server.campaigns.variants import assign, in_test_group
from tidings.server.changes import CampaignChanged, SettingsReplaced
from tidings.server.config import AppConfig
from tidings.server.delivery import Outgoing, Publisher, fit_frame, new_message, route
from tidings.server.errors import CampaignInactive, ClaimLost, Conflict, NotFound, SettingsChanged
from tidings.server.feed import Announce, alone
from tidings.server.policy import AppPolicy
from tidings.server.storage import (
    CampaignRow,
    DecisionRow,
    Limit,
    Outcome,
    PendingSend,
    Progress,
    SendRow,
    Store,
)
from tidings.server.storage.admission import settings_fingerprint
from tidings.server.targeting.audience import Audience
from tidings.server.targeting.explain import failed_filter
from tidings.server.targeting.profiles import Profile, new_profile

__all__ = ["CLAIM_LEASE_S", "DUE_BATCH", "TICK_S", "CampaignEngine"]

log = logging.getLogger(__name__)

CLAIM_LEASE_S = 60.0
"""How long a scheduler holds the due work it claimed; after that another may take it."""

TICK_S = 1.0
"""Longest wait between scheduler rounds (tag expiry, lifecycle changes); pending sends wake the
scheduler at their due time."""

DUE_BATCH = 5_000
"""Most pending sends one scheduler round takes."""

AUDIENCE_CHUNK = 10_000
"""Users an audience run decides per commit: a million-user campaign is a hundred short
transactions, each moving the run's cursor with its sends."""


@dataclass(slots=True)
class _Live:
    campaign: Campaign
    sent_total: int
    created_at: float
    updated_at: float
    rollout: dict[str, Any] | None = None
    """The stored roll-out state (None before the test started, or without a roll-out)."""
    last_run: dict[str, int] = field(default_factory=dict)
    """What the latest audience run here counted: ``no_device`` (users with no device yet
    whose inbox keeps the message) and ``skipped_no_device`` (banner-only, not sent)."""


@dataclass(slots=True)
class _App:
    campaigns: dict[str, _Live] = field(default_factory=dict)

    @property
    def triggered(self) -> list[_Live]:
        """Running triggered campaigns."""
        return [
            live for live in self.campaigns.values()
            if live.campaign.kind is CampaignKind.TRIGGERED
            and live.campaign.status is CampaignStatus.RUNNING
        ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Item:
    """One user to decide for; ``event`` is the triggering event's context, if any."""

    user: str
    event: Mapping[str, Any] | None = None
    pending_id: int = 0


class CampaignEngine:
    """Campaigns of every app hosted by one node, and their audience; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        publisher: Publisher,
        apps: Sequence[AppConfig],
        clock: Callable[[], float],
        caps: CapConfig | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        announce: Announce = alone,
        catch_up: Callable[[], Awaitable[object]] | None = None,
        timer: SimTime | None = None,
    ) -> None:
        self.store = store
        self.catch_up = catch_up
        """Brings this node's view up to every change the other nodes of a cluster stored so
        far (their feed); awaited before an audience is resolved. None: a single node."""
        self.timer = timer
        """The simulated clock ``clock`` reads, if any: waits convert to real seconds with it,
        and any change of it (speed, pause, a jump) wakes the scheduler to re-plan."""
        self.announce = announce
        """Tells the other nodes of a cluster that a campaign changed (they reload it)."""
        self.publisher = publisher
        self.clock = clock
        self.caps = caps
        """Cap tables for every app instead of each app's own (None: each app's policy)."""
        self.max_frame_bytes = max_frame_bytes
        self._configs = {a.id: a for a in apps}
        self._policies = {a.id: a.policy for a in apps}
        self._settings: dict[str, str] = {}
        """Per app, the fingerprint of the stored settings its policy was read from."""
        self.audience = Audience(
            store=store, apps=list(self._configs), clock=clock, announce=announce,
            policy=self.policy,
        )  # fmt: skip
        """Who the users are: live profiles, tags and segments of every app."""
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """Who claims due work: unique per process, so a claim is never mistaken for ours."""
        self._apps: dict[str, _App] = {}
        self._loop: asyncio.Task[None] | None = None
        self._tick_lock = asyncio.Lock()
        self._next_due = 0.0  # earliest pending send known to this process
        self._wake = asyncio.Event()
        if timer is not None:
            timer.subscribe(self._clock_changed)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the audience and the campaigns from the store; start ticking."""
        await self.resync()
        self._loop = asyncio.get_running_loop().create_task(self._run(), name="tidings-campaigns")

    async def resync(self) -> None:
        """Rebuild the audience and the campaigns from the store (at start, and when a node of
        a cluster may have missed changes the others announced)."""
        for app, cfg in self._configs.items():
            spec = await self.store.app_settings(app)
            self._policies[app] = _stored_policy(cfg, spec)
            self._settings[app] = settings_fingerprint(spec)
        await self.audience.start()
        for app in self._configs:
            self._apps[app] = state = _App()
            rollouts = await self.store.rollout_states(app)
            for stored in await self.store.campaigns(app):
                state.campaigns[stored.id] = _live_from(stored)
                state.campaigns[stored.id].rollout = rollouts.get(stored.id)

    # --- settings -----------------------------------------------------------------------------

    def policy(self, app: str) -> AppPolicy:
        """The app's policy now: caps, thresholds, value event, categories."""
        policy = self._policies.get(app)
        if policy is None:
            raise InvalidField("app", f"unknown app {app!r}")
        return policy

    def _caps(self, app: str) -> CapConfig:
        return self.caps if self.caps is not None else self.policy(app).caps

    async def set_settings(self, app: str, spec: Mapping[str, Any] | None) -> AppPolicy:
        """Replace the app's stored settings document (None: back to the file's settings).

        What the document leaves out takes the file's value. It is validated, stored, used at
        once by this node and announced to the others.

        Raises:
            InvalidField: naming the key path of the first bad setting.
        """
        cfg = self._configs.get(app)
        if cfg is None:
            raise InvalidField("app", f"unknown app {app!r}")
        policy = cfg.policy if spec is None else cfg.policy.updated(spec)
        stored = None if spec is None else dict(spec)
        await self.store.save_app_settings(app, stored, self.clock())
        self._settings[app] = settings_fingerprint(stored)
        await self._use_policy(app, policy)
        await self.announce(SettingsReplaced(app))
        return policy

    async def reload_settings(self, app: str) -> None:
        """Another node changed the app's settings: take the stored ones."""
        cfg = self._configs[app]
        spec = await self.store.app_settings(app)
        self._settings[app] = settings_fingerprint(spec)
        await self._use_policy(app, _stored_policy(cfg, spec))

    def settings_used(self, app: str) -> str | None:
        """The fingerprint of the app settings this node decides under (for the commit to
        check, :class:`~tidings.server.errors.SettingsChanged`)."""
        return self._settings.get(app)

    async def _use_policy(self, app: str, policy: AppPolicy) -> None:
        before = self.policy(app)
        self._policies[app] = policy
        await self.audience.policy_changed(app, before)

    async def reload_campaign(self, app: str, cid: str) -> None:
        """Another node changed a campaign: take the stored one (or its absence)."""
        state = self._state(app)
        stored = next((c for c in await self.store.campaigns(app) if c.id == cid), None)
        if stored is None:
            state.campaigns.pop(cid, None)
            return
        live = state.campaigns.get(cid)
        fresh = _live_from(stored)
        fresh.rollout = (await self.store.rollout_states(app)).get(cid)
        if live is None:
            state.campaigns[cid] = fresh
        else:  # keep the object: a dispatch under way holds it
            live.campaign, live.updated_at = fresh.campaign, fresh.updated_at
            live.sent_total = max(live.sent_total, fresh.sent_total)
            live.rollout = fresh.rollout
        if fresh.campaign.status is CampaignStatus.RUNNING:
            self._due_at(self.clock())  # its pending work may be ours to run now

    async def stop(self) -> None:
        """Stop the scheduler (pending work stays stored for the next start)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    def _due_at(self, due: float) -> None:
        """Pending work was stored for ``due``: wake the scheduler then, not a tick later."""
        if due < self._next_due:
            self._next_due = due
            self._wake.set()

    def _clock_changed(self) -> None:
        """The simulated clock changed speed, paused or jumped: re-plan the wait (any thread)."""
        loop = self._loop.get_loop() if self._loop is not None else None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def _real_wait(self, sim_seconds: float) -> float:
        """Real seconds until ``sim_seconds`` of the engine's clock have passed."""
        return sim_seconds if self.timer is None else self.timer.real_seconds(sim_seconds)

    async def _run(self) -> None:
        while True:
            wait = min(TICK_S, self._real_wait(self._next_due - self.clock()))
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            try:
                await self.tick()
            except TidingsError as exc:  # a store hiccup: the work stays pending, try again
                log.warning("campaigns: scheduler round failed: %s", exc.reason)
            except Exception:
                log.exception("campaigns: scheduler round failed")

    def _state(self, app: str) -> _App:
        state = self._apps.get(app)
        if state is None:
            raise InvalidField("app", f"unknown app {app!r}")
        return state

    async def on_events(
        self, app: str, user_key: str, events: Iterable[tuple[str, Mapping[str, Any], float]]
    ) -> None:
        """Behaviour events of one user (already stored): update the profile, run triggers."""
        state, now = self._state(app), self.clock()
        # A device clock ahead of ours does not make the future.
        fired = [(name, props, min(ts, now)) for name, props, ts in events]
        p = self.audience.on_events(app, user_key, fired, now)
        for live in state.triggered:
            for name, props, ts in fired:
                if name == live.campaign.trigger.event:  # type: ignore[union-attr]
                    await self._on_trigger(app, live, p, name, props, ts, now)

    async def _on_trigger(
        self, app: str, live: _Live, p: Profile, name: str, props: Mapping[str, Any],
        ts: float, now: float,
    ) -> None:  # fmt: skip
        c = live.campaign
        trig = c.trigger
        assert trig is not None
        variant, _ = _variant(live, p.user_id)
        reason, detail = None, ""
        failed = failed_filter(trig.where, props)
        if failed is not None:
            reason, detail = Reason.TRIGGER_FILTER, f"event {name}: {failed}"
        elif _ended(c, now):
            reason, detail = Reason.OUTSIDE_TRIGGER_WINDOW, _ended_detail(c)
        elif trig.window is not None and not trig.window.contains(ts):
            reason, detail = Reason.OUTSIDE_TRIGGER_WINDOW, f"event {name} at {ts:.0f}"
        else:
            missed = await self.audience.why_not(app, c.segment, p, now)
            if missed is not None:
                reason, detail = Reason.NOT_IN_SEGMENT, missed
        event = {"name": name, "props": dict(props), "ts": ts}
        if reason is not None:
            decision = _decision(c, p.user_id, now, reason, detail, variant=variant)
            await self.store.commit(app, Outcome(decisions=[decision]))
            return
        wait = max(trig.delay_s, trig.unless.within_s if trig.unless else 0)
        if wait > 0:
            due = ts + wait
            if _ended(c, due):
                detail = f"{_ended_detail(c)}, before the send time {due:.0f}"
                decision = _decision(c, p.user_id, now, Reason.OUTSIDE_TRIGGER_WINDOW, detail,
                                     variant)  # fmt: skip
                await self.store.commit(app, Outcome(decisions=[decision]))
                return
            await self.store.commit(app, Outcome(
                new_pending=[PendingSend(app=app, campaign=c.id, user_key=p.user_id,
                                         due_at=due, event=event)],
                decisions=[_decision(c, p.user_id, now, Reason.SCHEDULED,
                                     f"trigger {name}: due at {due:.0f}", variant)],
            ))  # fmt: skip
            self._due_at(due)
            return
        await self._dispatch(app, live, [_Item(p.user_id, event)], now)

    # --- users --------------------------------------------------------------------------------

    async def erase(self, app: str, user_key: str) -> bool:
        """Erase a user: profile, events, messages, decisions, pending work, devices' queues."""
        known = (
            self.audience.profile(app, user_key) is not None
            or await self.store.user(app, user_key) is not None
        )
        devices, pending = await self.store.erase_user(app, user_key)
        if pending:
            self.publisher.withdraw(app, devices, pending)
        self.audience.forget(app, user_key)
        return known or bool(devices)

    # --- campaigns ----------------------------------------------------------------------------

    def campaigns(self, app: str) -> list[tuple[Campaign, int]]:
        """Every campaign of an app with its sent total, oldest first."""
        return [(c.campaign, c.sent_total) for c in self._state(app).campaigns.values()]

    def campaign(self, app: str, cid: str) -> tuple[Campaign, int]:
        """One campaign and its sent total; raises NotFound."""
        live = self._live(app, cid)
        return live.campaign, live.sent_total

    def last_run(self, app: str, cid: str) -> Mapping[str, int]:
        """What this node's latest audience run of a campaign counted (empty before one):
        ``no_device`` and ``skipped_no_device`` (see :meth:`_dispatch`). A new run replaces
        the mapping: compare it by identity to see whether one happened."""
        return MappingProxyType(self._live(app, cid).last_run)

    def _live(self, app: str, cid: str) -> _Live:
        live = self._state(app).campaigns.get(cid)
        if live is None:
            raise NotFound("id", f"no campaign {cid!r} in app {app!r}")
        return live

    def limits(self, app: str) -> ContentLimits:
        """The rendered length limits of an app's messages."""
        cfg = self._configs.get(app)
        if cfg is None:
            raise InvalidField("app", f"unknown app {app!r}")
        return ContentLimits.of(cfg)

    async def save(self, spec: Mapping[str, Any], *, replace_existing: bool = False) -> Campaign:
        """Validate and store a campaign (new, or a replacement of a draft or paused one).

        Raises:
            CampaignError / TemplateError: naming the offending field.
            InvalidField: the id exists (create) or the campaign is running or over (replace).
        """
        campaign = Campaign.from_json(dict(spec))
        state = self._state(campaign.app)
        validate_campaign(campaign, limits=self.limits(campaign.app))
        self.policy(campaign.app).check_category(str(campaign.content.category),
                                                 "content.category")  # fmt: skip
        old = state.campaigns.get(campaign.id)
        if old is not None and not replace_existing:
            raise Conflict("id", f"campaign {campaign.id!r} exists; PUT replaces it")
        if old is None and replace_existing:
            raise NotFound("id", f"no campaign {campaign.id!r} in app {campaign.app!r}")
        status = CampaignStatus.DRAFT if old is None else old.campaign.status
        if status not in (CampaignStatus.DRAFT, CampaignStatus.PAUSED):
            raise Conflict("status", f"a {status} campaign cannot be changed")
        campaign = campaign.with_status(status)
        now = self.clock()
        await self.store.save_campaign(
            campaign.app, campaign.id, campaign.to_json(), str(status), now
        )
        state.campaigns[campaign.id] = _Live(
            campaign, old.sent_total if old else 0, old.created_at if old else now, now
        )
        await self.announce(CampaignChanged(campaign.app, campaign.id))
        return campaign

    async def delete(self, app: str, cid: str) -> None:
        """Delete a campaign that never ran (a draft); others are cancelled instead."""
        live = self._live(app, cid)
        if live.campaign.status is not CampaignStatus.DRAFT:
            raise Conflict("status", "only a draft can be deleted; cancel this campaign")
        await self.store.delete_campaign(app, cid)
        del self._state(app).campaigns[cid]
        await self.announce(CampaignChanged(app, cid))

    async def _set_status(
        self, app: str, live: _Live, status: CampaignStatus, then: Sequence[PendingSend] = ()
    ) -> None:
        """Move a campaign to ``status`` if :data:`TRANSITIONS` allows it from where it is.

        Checked twice: against this process's copy (a quick, clear answer), then by the store
        inside the update, so two requests racing for the same change (two starts) cannot
        both make it: the loser gets :class:`Conflict`. ``then``: the pending work the change
        creates, stored in the same write.
        """
        allowed = TRANSITIONS[status]
        current = live.campaign.status
        if current not in allowed:
            raise Conflict("status", f"a {current} campaign cannot be {_VERBS[status]}")
        now = self.clock()
        if not await self.store.set_campaign_status(
            app, live.campaign.id, str(status), now, expect=[str(s) for s in allowed], then=then
        ):
            raise Conflict("status", f"the campaign changed meanwhile; it cannot be "
                           f"{_VERBS[status]} now (read it again)")  # fmt: skip
        live.campaign = live.campaign.with_status(status)
        live.updated_at = now
        await self.announce(CampaignChanged(app, live.campaign.id))

    async def start_campaign(self, app: str, cid: str) -> Campaign:
        """Start a draft (or resume a paused) campaign."""
        live = self._live(app, cid)
        c, now = live.campaign, self.clock()
        first = c.status is CampaignStatus.DRAFT
        # The audience run a start creates is pending work stored with the status change, in
        # one write, and claimed like any other: if this node dies at any point after the
        # start, another one finishes it (when the claim's lease ends).
        run: list[PendingSend] = []
        if first and c.kind is not CampaignKind.TRIGGERED:
            at = now
            if c.kind is CampaignKind.SCHEDULED and c.schedule is not None and c.schedule.at:
                at = max(now, c.schedule.at)
            run.append(PendingSend(app=app, campaign=cid, user_key=None, due_at=at))
        await self._set_status(app, live, CampaignStatus.RUNNING, then=run)
        if first and c.kind is CampaignKind.TRIGGERED:
            await self._start_test(app, live, now)
        if run and run[0].due_at > now:
            self._due_at(run[0].due_at)
        else:
            await self.tick()  # the run just stored, or work that fell due while paused
        return live.campaign

    async def pause(self, app: str, cid: str) -> Campaign:
        """Pause a running campaign: triggers are ignored, pending work waits."""
        live = self._live(app, cid)
        await self._set_status(app, live, CampaignStatus.PAUSED)
        return live.campaign

    async def cancel(self, app: str, cid: str) -> tuple[Campaign, int]:
        """Cancel a campaign: pending work is dropped, undisplayed messages are revoked."""
        live = self._live(app, cid)
        await self._set_status(app, live, CampaignStatus.CANCELLED)
        await self.store.drop_pending(app, cid)
        revoked = await self.store.undisplayed_messages(app, cid)
        await asyncio.gather(*(self.publisher.revoke(app, mid) for mid in revoked))
        return live.campaign, len(revoked)

    # --- running ------------------------------------------------------------------------------

    async def tick(self, now: float | None = None) -> None:
        """One scheduler round: refresh profiles, then claim and run every pending send due.

        Claims (:meth:`Store.claim_due`) make sure two schedulers — two ticks here, or two
        gateway processes — never run the same pending send; a claim lost to another
        scheduler after its lease ended refuses the whole commit (:class:`ClaimLost`).
        """
        async with self._tick_lock:
            now = self.clock() if now is None else now
            for app in self._apps:
                self.audience.refresh(app, now)
            due = await self.store.claim_due(self.owner, now, CLAIM_LEASE_S, DUE_BATCH)
            groups: dict[tuple[str, str], list[PendingSend]] = {}
            for p in due:
                groups.setdefault((p.app, p.campaign), []).append(p)
            for (app, cid), items in groups.items():
                live = self._apps[app].campaigns.get(cid) if app in self._apps else None
                try:
                    await self._run_due(app, live, items, now)
                except ClaimLost as exc:
                    log.warning("campaigns: %s", exc.reason)
            later = await self.store.next_due()
            # Work still due now is claimed by someone else: look again on the next tick (at
            # most TICK_S of real time away, whatever the speed of a simulated clock).
            self._next_due = math.inf if later is None or later <= now else later

    async def _run_due(
        self, app: str, live: _Live | None, items: Sequence[PendingSend], now: float
    ) -> None:
        """Run one campaign's claimed due work, or let it go if the campaign is over."""
        if live is None or live.campaign.status is CampaignStatus.PAUSED:
            return  # not (yet) known or paused here: the claim lapses and the work waits
        c = live.campaign
        if c.status in (CampaignStatus.CANCELLED, CampaignStatus.COMPLETED):
            over = [
                _decision(c, p.user_key, now, Reason.CAMPAIGN_INACTIVE,
                          f"campaign {c.status} before the send time")
                for p in items if p.user_key is not None
            ]  # fmt: skip
            await self.store.commit(app, Outcome(
                decisions=over, done_pending=[p.id for p in items], claim=self.owner
            ))  # fmt: skip
            return
        for check in (p for p in items if p.user_key is None and _is_check(p)):
            await self._rollout_check(app, live, check, now)
        runs = [p for p in items if p.user_key is None and not _is_check(p)]
        if runs:
            await self._run_audience(app, live, now, runs)
        users = [p for p in items if p.user_key is not None]
        if users:
            await self._dispatch(app, live, [
                _Item(p.user_key or "", p.event, p.id) for p in users
            ], now, due=True)  # fmt: skip

    async def _run_audience(
        self, app: str, live: _Live, now: float, runs: Sequence[PendingSend]
    ) -> None:
        """Resolve a campaign's segment and decide for everyone in it (now or at their time).

        ``runs``: the claimed scheduled runs this is (one, but for a race of starts), finished
        by the last chunk (:meth:`_decide_in_chunks`).
        """
        await self._caught_up()
        users = await self.audience.resolve(app, live.campaign.segment)
        await self._start_test(app, live, now)
        counts = await self._decide_in_chunks(app, live, users, now, runs)
        if counts is not None:
            live.last_run = {"no_device": counts["no_device"],
                             "skipped_no_device": counts["skipped_no_device"]}  # fmt: skip
            await self._maybe_complete(app, live)

    async def _caught_up(self) -> None:
        """Before deciding for an audience: every profile change stored on any node so far is
        in this node's view (raises TidingsError when the feed cannot be read; the claimed
        run then waits and is tried again)."""
        if self.catch_up is not None:
            await self.catch_up()

    async def _decide_in_chunks(
        self, app: str, live: _Live, users: Iterable[str], now: float,
        runs: Sequence[PendingSend], event: Mapping[str, Any] | None = None,
    ) -> Counter[str] | None:  # fmt: skip
        """Decide for ``users`` in key order, :data:`AUDIENCE_CHUNK` per commit; the last
        commit finishes the claimed ``runs``.

        Every other commit moves the first run's cursor (:class:`Progress`) with its sends: a
        run taken over after a crash starts after the last chunk stored, so nobody is decided
        twice and nobody is missed. ``event``: what else the run's row keeps. Returns the
        counts of :meth:`_dispatch`, or None if the campaign stopped running (the run waits at
        its cursor).
        """
        head = runs[0]
        cursor = head.event or {}
        after, before = str(cursor.get(_AFTER, "")), int(cursor.get(_DECIDED, 0))
        todo = sorted(u for u in users if u > after)
        counts = Counter[str]()
        for start in range(0, max(len(todo), 1), AUDIENCE_CHUNK):
            chunk = [_Item(u) for u in todo[start : start + AUDIENCE_CHUNK]]
            if start + AUDIENCE_CHUNK < len(todo):
                at = {**(event or {}), _AFTER: chunk[-1].user,
                      _DECIDED: before + start + len(chunk), _OF: before + len(todo)}  # fmt: skip
                step = Progress(pending_id=head.id, event=at,
                                claim_until=self.clock() + CLAIM_LEASE_S)  # fmt: skip
                ran = await self._dispatch(app, live, chunk, now, progress=step)
            else:
                ran = await self._dispatch(app, live, chunk, now, done=[r.id for r in runs])
            if ran is None:
                return None
            counts.update(ran)
        return counts

    # --- roll-out -----------------------------------------------------------------------------

    async def _start_test(self, app: str, live: _Live, now: float) -> None:
        """Start a roll-out's test phase: its state, and the claimed check that will end it.

        The check is stored first: a crash in between leaves a check that finds no test and
        starts one, never a test that nothing ends.
        """
        r = live.campaign.rollout
        if r is None or live.rollout is not None:
            return
        due = now + min(r.check_every_s, r.decide_after_s)
        check = PendingSend(app=app, campaign=live.campaign.id, user_key=None, due_at=due,
                            event={_CHECK: True})  # fmt: skip
        await self.store.commit(app, Outcome(new_pending=[check]))
        testing = {"phase": "testing", "started_at": now, "deadline": now + r.decide_after_s}
        live.rollout = await self.store.swap_rollout(app, live.campaign.id, None, testing)
        self._due_at(due)
        await self.announce(CampaignChanged(app, live.campaign.id))

    async def _rollout_check(self, app: str, live: _Live, row: PendingSend, now: float) -> None:
        """Run one claimed roll-out check: decide (once, in the store) or check again later.

        A decision names the check that made it (``row``): only that check sends to the rest,
        in the commit that finishes it (fenced by its claim). So the rest get the chosen content
        once, however many nodes check; after a crash between deciding and sending, the check
        is still pending, runs again, finds its own decision and sends then.
        """
        c, r = live.campaign, live.campaign.rollout
        done = Outcome(done_pending=[row.id], claim=self.owner)
        state = (await self.store.rollout_states(app)).get(c.id)
        if r is None:
            await self.store.commit(app, done)
            return
        if state is None:  # the test never started (a crash right after the check was stored)
            testing = {"phase": "testing", "started_at": now, "deadline": now + r.decide_after_s}
            state = await self.store.swap_rollout(app, c.id, None, testing)
        if state is not None and state.get("phase") == "testing":
            report = await self.stats(app, c.id)
            winner = report["verdict"]["winner"]
            deadline = float(state["deadline"])
            if winner is None and now < deadline:
                due = min(now + r.check_every_s, deadline)
                again = PendingSend(app=app, campaign=c.id, user_key=None, due_at=due,
                                    event={_CHECK: True})  # fmt: skip
                await self.store.commit(app, Outcome(
                    done_pending=[row.id], new_pending=[again], claim=self.owner
                ))  # fmt: skip
                self._due_at(due)
                return
            decided = dict(state) | {"phase": "rolled_out", "decided_at": now, "row": row.id}
            if winner is not None:
                decided |= {"variant": winner, "decided_by": "winner",
                            "detail": report["verdict"]["reason"]}  # fmt: skip
            elif r.at_deadline is RolloutFallback.BASE:
                decided |= {"variant": None, "decided_by": "deadline",
                            "detail": "no winner by the deadline: the base content"}  # fmt: skip
            else:
                funnels = {v.name: Funnel.from_counts(report["variants"].get(v.name, {}))
                           for v in c.variants}  # fmt: skip
                best = best_variant(funnels, report["metric"])
                decided |= {"variant": best, "decided_by": "deadline",
                            "detail": f"no winner by the deadline ({report['verdict']['reason']})"
                                      f": {best}, the best observed"}  # fmt: skip
            state = await self.store.swap_rollout(app, c.id, state, decided)
            live.rollout = state
            await self.announce(CampaignChanged(app, c.id))
        if state is None or state.get("row") != row.id or c.kind is CampaignKind.TRIGGERED:
            await self.store.commit(app, done)  # decided by another check, or nothing to send
            return
        await self._caught_up()
        rest = [
            u for u in await self.audience.resolve(app, c.segment)
            if not in_test_group(c.id, u, r.test_share)
            and assign(c.id, u, c.variants, c.control_share) != CONTROL
        ]  # fmt: skip
        await self._decide_in_chunks(app, live, rest, now, [row], event={_CHECK: True})

    async def _maybe_complete(self, app: str, live: _Live) -> None:
        c = live.campaign
        if c.status is not CampaignStatus.RUNNING:
            return
        budget = c.frequency.total_budget
        spent = budget is not None and live.sent_total >= budget
        one_shot = c.kind is not CampaignKind.TRIGGERED
        if spent or (one_shot and await self.store.count_pending(app, c.id) == 0):
            with contextlib.suppress(Conflict):  # cancelled or completed meanwhile
                await self._set_status(app, live, CampaignStatus.COMPLETED)

    def send_limits(self, app: str, user_key: str, category: str, now: float) -> tuple[Limit, ...]:
        """The caps a direct send of ``category`` to this user must fit (checked at commit).

        Opt-outs are not among them: the sender filters those before.
        """
        p = self.audience.profile(app, user_key) or new_profile(app, user_key, now)
        verdict = limits_for(p, category, config=self._caps(app))
        return () if isinstance(verdict, Decision) else verdict

    def _send_at(self, c: Campaign, p: Profile, now: float) -> float:
        st = c.send_time
        if c.schedule is not None and c.schedule.local_time is not None:
            start = max(now, c.schedule.not_before or now)
            return next_local_time(start, p.tz, c.schedule.local_time)
        if st.policy is SendPolicy.IMMEDIATE and st.window is None:
            return now
        return choose_send_time(st.policy, p, now, at=st.at, local_time=st.local_time,
                                default_hour=st.default_hour, window=st.window)  # fmt: skip

    async def _dispatch(
        self, app: str, live: _Live, items: Sequence[_Item], now: float, *, due: bool = False,
        done: Sequence[int] = (), progress: Progress | None = None, again: bool = True,
    ) -> dict[str, int] | None:  # fmt: skip
        """Decide for each user, render, and store everything in one write, then fan out.

        Returns how many users had no device yet: ``no_device`` (an inbox message waits in
        their inbox for their first device) and ``skipped_no_device`` (a banner-only message,
        logged ``no_device`` and not sent); None if the store found the campaign no longer
        running (nothing was stored).

        The caps, per-user limits and budget are checked and consumed by the store inside that
        write (:class:`Limit`, :attr:`Outcome.budget`): a send they no longer allow is logged
        with the cap's reason and not delivered. Here they only save work: nobody is rendered
        once this process knows the budget is spent (never sooner: a send counted here might
        still be refused by a cap, and the budget must be used in full).

        ``due``: the items are claimed pending work whose time came (no second send-time
        choice). ``done``: other claimed pending work this write finishes; ``progress``: the
        cursor of a claimed run this write moves. ``again``: decide again once if the store
        finds the app's settings changed.
        """
        c = live.campaign
        limits = self.limits(app)
        cfg = self._configs[app]
        ttls = (cfg.banner_ttl_s, cfg.inbox_ttl_s)
        cap_config = self._caps(app)
        decisions: list[DecisionRow] = []
        later: list[PendingSend] = []
        keep: list[tuple[str, Message, bytes, tuple[Limit, ...]]] = []
        budget = c.frequency.total_budget
        followed = await self._unless_followed(app, c, items) if due else set()
        unless = c.trigger.unless if c.trigger else None
        followed_why = f"{unless.event} followed within {unless.within_s} s" if unless else ""
        for n, item in enumerate(items):
            p = self.audience.profile(app, item.user)
            variant, waiting = _variant(live, item.user)
            if p is None:
                decisions.append(_decision(c, item.user, now, Reason.NOT_IN_SEGMENT,
                                           "no profile", variant))  # fmt: skip
                continue
            if n in followed:
                decisions.append(_decision(c, item.user, now, Reason.UNLESS_MATCHED,
                                           followed_why, variant))  # fmt: skip
                continue
            if _ended(c, now):  # a delayed or scheduled send whose time came too late
                decisions.append(_decision(c, item.user, now, Reason.OUTSIDE_TRIGGER_WINDOW,
                                           _ended_detail(c), variant))  # fmt: skip
                continue
            missed = await self.audience.why_not(app, c.segment, p, now) if due else None
            if missed is not None:
                left = f"left the segment before the send time: {missed}"
                decisions.append(_decision(c, item.user, now, Reason.NOT_IN_SEGMENT, left, variant))
                continue
            if variant == CONTROL:
                decisions.append(_decision(c, item.user, now, Reason.HOLDOUT, "", variant))
                continue
            if waiting:
                decisions.append(_decision(c, item.user, now, Reason.SCHEDULED,
                                           _WAITING_DETAIL, None))  # fmt: skip
                continue
            if budget is not None and live.sent_total >= budget:
                decisions.append(_decision(c, item.user, now, Reason.BUDGET_EXHAUSTED,
                                           f"budget of {budget} used", variant))  # fmt: skip
                continue
            verdict = limits_for(p, str(c.content.category), campaign=c, config=cap_config)
            if isinstance(verdict, Decision):
                decisions.append(_decision(c, item.user, now, verdict.reason, verdict.detail,
                                           variant))  # fmt: skip
                continue
            if not due:
                at = self._send_at(c, p, now)
                if at > now + 1:
                    later.append(PendingSend(app=app, campaign=c.id, user_key=item.user,
                                             due_at=at, event=_plain(item.event)))  # fmt: skip
                    decisions.append(_decision(c, item.user, now, Reason.SCHEDULED,
                                               f"send at {at:.0f}", variant))  # fmt: skip
                    continue
            content = c.content_for(variant)
            try:
                event = item.event
                rendered = render_content(
                    content, user=user_context(p), limits=limits,
                    truncate=content.overflow is Overflow.TRUNCATE,
                    event=None if event is None else event_context(
                        event["name"], event.get("props", {}), event.get("ts", 0)),
                )  # fmt: skip
            except TemplateError as exc:
                decisions.append(_decision(c, item.user, now, Reason.TEMPLATE_ERROR,
                                           exc.reason, variant))  # fmt: skip
                continue
            message = new_message(
                kind=content.kind, title=rendered.title, body=rendered.body, now=now,
                ttl_s=content.ttl_s, ttls=ttls, category=str(content.category),
                priority=str(content.priority), campaign=c.id, variant=variant,
                collapse_key=content.collapse_key, image=rendered.image_url,
                actions=[WireAction(id=a.id, label=a.label, url=a.url)
                         for a in rendered.actions],
                data=rendered.data,
            )  # fmt: skip
            try:
                wire = fit_frame(message, self.max_frame_bytes)
            except InvalidField as exc:
                decisions.append(_decision(c, item.user, now, Reason.TOO_LARGE, exc.reason,
                                           variant))  # fmt: skip
                continue
            keep.append((item.user, message, wire, verdict))
        devices: dict[str, list[str]] = {}
        if keep:
            for device, user in await self.store.devices_of_keys(app, [u for u, *_ in keep]):
                devices.setdefault(user, []).append(device)
        sends: list[SendRow] = []
        out: list[Outgoing] = []
        counts = {"no_device": 0, "skipped_no_device": 0}
        no_device_users: set[str] = set()
        for user, message, wire, caps in keep:
            routes = route(message.kind, [user], devices)
            if routes.no_device:
                decisions.append(_decision(c, user, now, Reason.NO_DEVICE,
                                           f"a {message.kind} message needs a device",
                                           message.variant))  # fmt: skip
                counts["skipped_no_device"] += 1
                continue
            where = (
                f"{len(routes.targets)} device(s)"
                if routes.targets
                else "no device yet: kept in the user's inbox for their first device"
            )
            no_device_users.update(routes.waiting)
            sends.append(SendRow(
                user_key=user, at=now, category=message.category, message_id=message.id,
                campaign=c.id, variant=message.variant, limits=caps,
                decision=_decision(c, user, now, Reason.SENT, where, message.variant,
                                   message.id),
            ))  # fmt: skip
            out.append(Outgoing(message, wire, routes.targets, routes.waiting))
        finished = [*done, *(i.pending_id for i in items if i.pending_id)]
        claimed = bool(finished) or progress is not None
        try:
            committed = await self.publisher.publish(app, out, Outcome(
                sends=sends, decisions=decisions, new_pending=later, done_pending=finished,
                campaign=c.id, budget=budget, claim=self.owner if claimed else None,
                progress=progress, settings=self.settings_used(app),
            ))  # fmt: skip
        except CampaignInactive as exc:
            # Paused, cancelled or completed through another node before this node heard:
            # nothing was stored (claimed work stays pending); take the stored campaign.
            log.info("campaigns: %s; reading it again", exc.reason)
            await self.reload_campaign(app, c.id)
            return None
        except SettingsChanged as exc:
            # Decided under settings another node replaced: nothing was stored. Read them
            # and decide again, once (a second change meanwhile leaves the work pending).
            log.info("campaigns: %s; reading them again", exc.reason)
            await self.reload_settings(app)
            if not again:
                return None
            return await self._dispatch(app, live, items, now, due=due, done=done,
                                        progress=progress, again=False)  # fmt: skip
        if committed.sent_total is not None:
            live.sent_total = max(live.sent_total, committed.sent_total)
        if later:
            self._due_at(min(p.due_at for p in later))
        await self._maybe_complete(app, live)
        counts["no_device"] = len(no_device_users - {r.user_key for r in committed.refused})
        return counts

    async def _unless_followed(self, app: str, c: Campaign, items: Sequence[_Item]) -> set[int]:
        """Positions of due trigger ``items`` whose ``unless`` event followed in time.

        One store read for the whole batch: every ``unless`` event since the earliest trigger.
        """
        unless = c.trigger.unless if c.trigger else None
        starts = {n: float(i.event.get("ts", 0)) for n, i in enumerate(items) if i.event}
        if unless is None or not starts:
            return set()
        by_user: dict[str, list[float]] = {}
        for e in await self.store.events_since(app, min(starts.values()), name=unless.event):
            if all(f.matches(e.props) for f in unless.where):
                by_user.setdefault(e.user_key, []).append(e.ts)
        return {
            n for n, start in starts.items()
            if any(start <= ts <= start + unless.within_s for ts in by_user.get(items[n].user, ()))
        }  # fmt: skip

    # --- reading ------------------------------------------------------------------------------

    async def decisions(
        self, app: str, cid: str, user: str | None = None, limit: int = 100
    ) -> list[DecisionRow]:
        """The decision log of a campaign, newest first.

        A campaign logs the users it considered (its audience, its triggers' users). Asked
        about someone it never considered, the answer is evaluated now: not in the segment,
        or not considered yet.
        """
        live = self._live(app, cid)
        c = live.campaign
        rows = await self.store.decisions(app, cid, user, limit)
        if rows or user is None:
            return rows
        p, now = self.audience.profile(app, user), self.clock()
        budget = c.frequency.total_budget
        if budget is not None and live.sent_total >= budget:
            reason, detail = Reason.BUDGET_EXHAUSTED, f"budget of {budget} used"
        elif p is None:
            reason, detail = Reason.NOT_IN_SEGMENT, "no such user (no profile)"
        elif (missed := await self.audience.why_not(app, c.segment, p, now)) is not None:
            reason, detail = Reason.NOT_IN_SEGMENT, f"evaluated now: {missed}"
        elif c.trigger is not None and c.status is CampaignStatus.RUNNING:
            reason = Reason.NOT_TRIGGERED
            detail = (f"in the segment, but no {c.trigger.event} event has triggered the"
                      " campaign for this user yet")  # fmt: skip
        else:
            reason = Reason.CAMPAIGN_INACTIVE
            detail = f"the campaign has not run for this user yet (it is {c.status})"
        return [_decision(c, user, now, reason, detail)]

    async def stats(self, app: str, cid: str) -> dict[str, Any]:
        """A campaign's report; see :func:`~tidings.server.campaigns.stats.campaign_stats`."""
        c = self._live(app, cid).campaign
        counts = await self.store.funnel_counts(app, cid)
        channels = await self.store.channel_counts(app, cid)
        cohorts = [Cohort(*row) for row in await self.store.cohorts(
            app, cid, max(RETENTION_WINDOWS.values())
        )]  # fmt: skip
        default_goal = None
        if c.conversion is None and c.measured:  # the app's value event, by default
            default_goal = Conversion(self.policy(app).value_event.name,
                                      DEFAULT_CONVERSION_WINDOW_S, ())  # fmt: skip
        conv = c.conversion or default_goal
        events: list[tuple[str, float, Mapping[str, Any]]] = []
        if conv is not None and cohorts:
            since = min(x.start for x in cohorts)
            events = [
                (e.user_key, e.ts, e.props)
                for e in await self.store.events_since(app, since, name=conv.event)
            ]
        rollout = (await self.store.rollout_states(app)).get(cid)
        days = await self.store.funnel_by_day(app, cid)
        report = campaign_stats(c, counts, channels, cohorts, events, now=self.clock(),
                                rollout=rollout, days=days,
                                default_goal=default_goal)  # fmt: skip
        # An audience being decided chunk by chunk: how far it has got (absent between runs).
        runs = [e for e in await self.store.run_events(app, cid) if _AFTER in e]
        if runs:
            report["deciding"] = {"decided": sum(int(r[_DECIDED]) for r in runs),
                                  "of": sum(int(r[_OF]) for r in runs)}  # fmt: skip
        return report


_VERBS = {
    CampaignStatus.RUNNING: "started",
    CampaignStatus.PAUSED: "paused",
    CampaignStatus.CANCELLED: "cancelled",
    CampaignStatus.COMPLETED: "completed",
}


def _stored_policy(cfg: AppConfig, spec: Mapping[str, Any] | None) -> AppPolicy:
    """The file's policy with the stored settings document over it."""
    if spec is None:
        return cfg.policy
    try:
        return cfg.policy.updated(spec)
    except InvalidField as exc:  # stored by a version that read it differently: say so
        log.warning("settings of app %s: stored settings ignored: %s", cfg.id, exc.reason)
        return cfg.policy


def _live_from(stored: CampaignRow) -> _Live:
    campaign = Campaign.from_json({**stored.spec, "status": stored.status})
    return _Live(campaign, stored.sent_total, stored.created_at, stored.updated_at)


_CHECK = "rollout_check"
"""Marks a campaign-wide pending send as a roll-out check (in its ``event``)."""

_AFTER, _DECIDED, _OF = "after", "decided", "of"
"""The keys of an audience run's cursor in its row's ``event`` (:class:`Progress`)."""

_WAITING_DETAIL = "in the roll-out's rest: waits for the test's winner"


def _is_check(p: PendingSend) -> bool:
    return bool(p.event and p.event.get(_CHECK))


def _variant(live: _Live, user: str) -> tuple[str | None, bool]:
    """The user's variant, and whether the user waits for a roll-out's decision.

    With a roll-out, users outside the test group (and the holdout) get the decided variant
    once there is one, and wait before.
    """
    c = live.campaign
    variant = assign(c.id, user, c.variants, c.control_share)
    r = c.rollout
    if variant == CONTROL or r is None or in_test_group(c.id, user, r.test_share):
        return variant, False
    state = live.rollout
    if state is not None and state.get("phase") == "rolled_out":
        return state.get("variant"), False
    return None, True


def _ended(c: Campaign, at: float) -> bool:
    """Whether a triggered campaign's window has ended at ``at``: nothing is sent after its end,
    whatever the time of the event that triggered it (a late event, a delayed send)."""
    window = c.trigger.window if c.trigger is not None else None
    return window is not None and window.end_at is not None and at >= window.end_at


def _ended_detail(c: Campaign) -> str:
    end = c.trigger.window.end_at if c.trigger and c.trigger.window else None
    return f"the campaign's window ends at {end:.0f}" if end is not None else ""


def _decision(
    c: Campaign, user: str, now: float, reason: Reason, detail: str = "",
    variant: str | None = None, message_id: str | None = None,
) -> DecisionRow:  # fmt: skip
    return DecisionRow(campaign=c.id, user_key=user, at=now, reason=str(reason), detail=detail,
                       variant=variant, message_id=message_id)  # fmt: skip


def _plain(event: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if event is None else dict(event)
