"""The SQL both stores share: statements written once, with ``?`` placeholders.

:class:`SqlStore` holds the reads and the simple writes whose SQL is the same on SQLite and on
PostgreSQL. A backend supplies four primitives and keeps only what its engine forces on it
(transactions, locking, batching, error mapping, the dialect's own statements):

- ``_rows(sql, *params)``: one query's rows;
- ``_row(sql, *params)``: its first row, or None;
- ``_rows_in(sql, app, values, *after)``: a query with ``IN ({marks})`` over a list of ids;
- ``_execute(sql, params, sql, params, ...)``: statements run as one committed write.

The dialect rules the shared statements follow: ``?`` placeholders (PostgreSQL's ``$1, $2...``
by :func:`numbered`), booleans tested as ``NOT x`` (SQLite stores 0 and 1), text sorted with
``COLLATE BINARY`` (byte order on both: PostgreSQL's ``"C"``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, ClassVar

from tidings.protocol.frames import InboxChange
from tidings.server.storage.rows import (
    CampaignRow,
    DecisionRow,
    DeviceRow,
    EventRow,
    PendingDelivery,
    ResumeState,
    SendRow,
    UserRow,
    anonymous_key,
)

__all__ = [
    "DEVICE_SEEN",
    "INSERT_DEVICE",
    "INSERT_USER",
    "MISSING_INBOX",
    "PAUSED",
    "RESUME",
    "TOUCH_USER",
    "UPSERT_DEVICE",
    "USER_SEEN",
    "SqlStore",
    "device_params",
    "migrations",
    "numbered",
    "stored_device",
]

INSERT_DEVICE = (
    "INSERT INTO devices (app, device_id, user_id, platform, app_version, locale, tz,"
    " sdk_version, first_seen, last_seen, session_epoch)"
)
DEVICE_SEEN = (
    " ON CONFLICT (app, device_id) DO UPDATE SET user_id=excluded.user_id,"
    " platform=excluded.platform, app_version=excluded.app_version,"
    " locale=excluded.locale, tz=excluded.tz, sdk_version=excluded.sdk_version,"
    " last_seen=excluded.last_seen, session_epoch=devices.session_epoch+1"
    " RETURNING first_seen, last_seq, acked_seq, session_epoch, app, device_id"
)
"""What a hello does to a device row that exists: new facts, a new session epoch; and the
stored state back (:func:`stored_device` reads it)."""
UPSERT_DEVICE = INSERT_DEVICE + " VALUES (?,?,?,?,?,?,?,?,?,?,1)" + DEVICE_SEEN
"""A device's hello: its row made or refreshed (:func:`device_params` are the parameters)."""
INSERT_USER = "INSERT INTO users (app, user_key, first_seen, last_seen)"
USER_SEEN = " ON CONFLICT (app, user_key) DO UPDATE SET last_seen=excluded.last_seen"
TOUCH_USER = INSERT_USER + " VALUES (?,?,?,?)" + USER_SEEN
"""The profile of a device that said hello exists and was seen now."""


def device_params(row: DeviceRow) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The parameters of :data:`UPSERT_DEVICE` and :data:`TOUCH_USER` for a hello."""
    first, last = float(row.first_seen), float(row.last_seen)
    return (
        (row.app, row.device_id, row.user_id, row.platform, row.app_version, row.locale,
         row.tz, row.sdk_version, first, last),
        (row.app, row.user_id or anonymous_key(row.device_id), first, last),
    )  # fmt: skip


def stored_device(row: DeviceRow, stored: Any) -> DeviceRow:
    """``row`` with the sequence state :data:`UPSERT_DEVICE` returned."""
    return replace(row, first_seen=stored[0], last_seq=int(stored[1]), acked_seq=int(stored[2]),
                   epoch=int(stored[3]))  # fmt: skip


def migrations(folder: str) -> list[tuple[int, Traversable]]:
    """The numbered ``NNNN_name.sql`` scripts of a migrations ``folder`` of this package, in
    order, as (version, script)."""
    where = resources.files("tidings.server.storage").joinpath(*folder.split("/"))
    return sorted(
        (int(p.name.split("_", 1)[0]), p) for p in where.iterdir() if p.name.endswith(".sql")
    )


MISSING_INBOX = (
    "SELECT u.message_id, u.collapse_key FROM user_inbox u JOIN messages m"
    " ON m.app=u.app AND m.id=u.message_id"
    " WHERE u.app=? AND u.user_key=? AND m.expires_at>? AND NOT m.revoked"
    " AND NOT EXISTS (SELECT 1 FROM inbox_state s WHERE s.app=u.app AND s.user_key=u.user_key"
    " AND s.message_id=u.message_id AND s.state='deleted')"
    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.app=u.app AND d.device_id=?"
    " AND d.message_id=u.message_id AND (d.state=0 OR (d.state=1 AND d.seq<=?)))"
)
"""The messages of a user's inbox a device does not hold (parameters: app, user key, now,
device, the device's cursor; :meth:`~tidings.server.storage.DeliveryStore.fill_inbox`)."""
RESUME = (
    "SELECT 'p', d.seq, d.message_id, m.wire, d.inbox_only, CAST(NULL AS TEXT),"
    " CAST(NULL AS BIGINT) FROM deliveries d JOIN messages m ON m.app=d.app AND m.id=d.message_id"
    " WHERE d.app=? AND d.device_id=? AND d.seq>? AND d.state=0 AND NOT m.revoked"
    " AND m.expires_at>?"
    f" UNION ALL SELECT 'm', NULL, x.message_id, NULL, NULL, NULL, NULL FROM ({MISSING_INBOX}"
    " LIMIT 1) x"
    " UNION ALL SELECT 'i', s.ver, s.message_id, NULL, NULL, s.state, u.inbox_ver FROM users u"
    " LEFT JOIN inbox_state s ON s.app=u.app AND s.user_key=u.user_key AND s.ver>?"
    " WHERE u.app=? AND u.user_key=?"
)
"""A hello's reads in one statement (one snapshot, one trip): ``p`` rows are the device's
queue after its cursor, an ``m`` row says the user's inbox has a message the device lacks,
``i`` rows carry the user's inbox version and each change after the device's."""

PAUSED = "SELECT 1 FROM campaigns c WHERE c.app=p.app AND c.id=p.campaign AND c.status='paused'"
"""The campaign of pending work ``p`` is paused: its work waits."""

_PLACEHOLDER = re.compile(r"'[^']*'|\?|COLLATE BINARY")


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """``sql`` in PostgreSQL's dialect: each ``?`` outside quotes becomes ``$1, $2...`` in
    order, and ``COLLATE BINARY`` becomes ``COLLATE "C"``. SQL without either is unchanged."""
    count = 0

    def swap(m: re.Match[str]) -> str:
        nonlocal count
        token = m.group(0)
        if token == "?":
            count += 1
            return f"${count}"
        return 'COLLATE "C"' if token == "COLLATE BINARY" else token

    return _PLACEHOLDER.sub(swap, sql)


class SqlStore:
    """The statements of :class:`~tidings.server.storage.Store` that both backends share."""

    ROW_ID: ClassVar[str] = "id"
    """The column that orders rows of the same time by insertion (SQLite's ``rowid``)."""
    DELIVERIES: ClassVar[str] = "deliveries d"
    """The deliveries table as a campaign's stats read it by message (SQLite needs a hint)."""
    DAY_OF: ClassVar[str] = "floor({} / 86400)::int8"
    """The UTC day number of a time in seconds."""
    answered_at: float = 0.0
    """When the store last answered a call (monotonic seconds; a networked store keeps it)."""

    async def _rows(self, sql: str, *params: Any) -> list[Any]:
        raise NotImplementedError

    async def _row(self, sql: str, *params: Any) -> Any:
        raise NotImplementedError

    async def _rows_in(
        self, sql: str, app: str, values: Sequence[str], *after: object
    ) -> list[Any]:
        raise NotImplementedError

    async def _execute(self, *statements: Any) -> None:
        raise NotImplementedError

    async def ack_many(
        self, acks: Sequence[tuple[str, str, int]], now: float | None = None
    ) -> None:
        raise NotImplementedError

    async def devices_of_users(self, app: str, users: Sequence[str]) -> list[tuple[str, str]]:
        """(device_id, user_id) of every known device of these users."""
        rows = await self._rows_in(
            "SELECT device_id, user_id FROM devices WHERE app=? AND user_id IN ({marks})",
            app,
            users,
        )
        return [(r[0], r[1]) for r in rows]

    async def known_devices(self, app: str, devices: Sequence[str]) -> list[tuple[str, str]]:
        """(device_id, user key) of the listed devices that exist."""
        rows = await self._rows_in(
            "SELECT device_id, user_id FROM devices WHERE app=? AND device_id IN ({marks})",
            app,
            devices,
        )
        return [(r[0], r[1] or anonymous_key(r[0])) for r in rows]

    async def user(self, app: str, user_key: str) -> UserRow | None:
        """A user's profile row, or None."""
        r = await self._row(
            "SELECT attrs, consent, first_seen, last_seen, inbox_ver FROM users"
            " WHERE app=? AND user_key=?",
            app,
            user_key,
        )
        if r is None:
            return None
        return UserRow(
            app=app,
            user_key=user_key,
            attrs=json.loads(r[0]),
            consent=json.loads(r[1]),
            first_seen=r[2],
            last_seen=r[3],
            inbox_ver=int(r[4]),
        )

    async def pending(self, app: str, device: str, after: int, now: float) -> list[PendingDelivery]:
        """Unacknowledged, unexpired, unrevoked deliveries with ``seq > after``, in order."""
        rows = await self._rows(
            "SELECT d.seq, d.message_id, m.wire, d.inbox_only FROM deliveries d JOIN messages m"
            " ON m.app=d.app AND m.id=d.message_id"
            " WHERE d.app=? AND d.device_id=? AND d.seq>? AND d.state=0 AND NOT m.revoked"
            " AND m.expires_at>? ORDER BY d.seq",
            app,
            device,
            after,
            float(now),
        )
        return [
            PendingDelivery(seq=int(r[0]), message_id=r[1], wire=bytes(r[2]),
                            inbox_only=bool(r[3]))
            for r in rows
        ]  # fmt: skip

    async def ack(self, app: str, device: str, seq: int, now: float | None = None) -> None:
        """Mark every delivery up to ``seq`` acknowledged (at ``now``, when given)."""
        await self.ack_many([(app, device, seq)], now)

    async def count_events(self, app: str) -> int:
        """How many events an app has stored (tests, metrics)."""
        r = await self._row("SELECT COUNT(*) FROM events WHERE app=?", app)
        return int(r[0]) if r else 0

    async def events_since(
        self, app: str, since: float, *, name: str | None = None, user_key: str | None = None
    ) -> list[EventRow]:
        """Stored events with ``ts >= since``, oldest first, optionally of one name or user."""
        sql = "SELECT user_key, name, props, ts FROM events WHERE app=? AND ts>=?"
        params: list[Any] = [app, float(since)]
        if name is not None:
            sql += " AND name=?"
            params.append(name)
        if user_key is not None:
            sql += " AND user_key=?"
            params.append(user_key)
        rows = await self._rows(sql + " ORDER BY ts", *params)
        return [EventRow(user_key=r[0], name=r[1], props=json.loads(r[2]), ts=r[3]) for r in rows]

    async def campaigns(self, app: str | None = None) -> list[CampaignRow]:
        """Every stored campaign (of one app, or of all), oldest first."""
        sql = "SELECT app, id, spec, status, sent_total, created_at, updated_at FROM campaigns"
        params: tuple[Any, ...] = ()
        if app is not None:
            sql, params = sql + " WHERE app=?", (app,)
        rows = await self._rows(sql + " ORDER BY created_at, id COLLATE BINARY", *params)
        return [
            CampaignRow(app=r[0], id=r[1], spec=json.loads(r[2]), status=r[3],
                        sent_total=int(r[4]), created_at=r[5], updated_at=r[6])
            for r in rows
        ]  # fmt: skip

    async def save_campaign(
        self, app: str, cid: str, spec: dict[str, Any], status: str, now: float
    ) -> None:
        """Create or replace a campaign definition (its sent total is kept)."""
        await self._execute(
            "INSERT INTO campaigns (app, id, spec, status, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (app, id) DO UPDATE SET spec=excluded.spec,"
            " status=excluded.status, updated_at=excluded.updated_at",
            (app, cid, json.dumps(spec), status, float(now), float(now)),
        )

    async def delete_campaign(self, app: str, cid: str) -> None:
        """Delete a campaign and its pending work (its log and messages stay for the record)."""
        await self._execute(
            "DELETE FROM campaigns WHERE app=? AND id=?",
            (app, cid),
            "DELETE FROM pending_sends WHERE app=? AND campaign=?",
            (app, cid),
        )

    async def tag_rules(self) -> list[tuple[str, dict[str, Any]]]:
        """Every stored tag rule as (app, rule JSON)."""
        rows = await self._rows(
            "SELECT app, spec FROM tag_rules ORDER BY app COLLATE BINARY, name COLLATE BINARY"
        )
        return [(r[0], json.loads(r[1])) for r in rows]

    async def save_tag_rule(self, app: str, name: str, spec: dict[str, Any] | None) -> None:
        """Create or replace a tag rule; ``None`` deletes it."""
        if spec is None:
            await self._execute("DELETE FROM tag_rules WHERE app=? AND name=?", (app, name))
        else:
            await self._execute(
                "INSERT INTO tag_rules (app, name, spec) VALUES (?,?,?) ON CONFLICT"
                " (app, name) DO UPDATE SET spec=excluded.spec",
                (app, name, json.dumps(spec)),
            )

    async def app_settings(self, app: str) -> dict[str, Any] | None:
        """The settings document the admin API stored for an app, or None."""
        r = await self._row("SELECT spec FROM app_settings WHERE app=?", app)
        return None if r is None else dict(json.loads(r[0]))

    async def save_app_settings(self, app: str, spec: dict[str, Any] | None, now: float) -> None:
        """Store an app's settings document; ``None`` deletes it (the file's settings hold)."""
        if spec is None:
            await self._execute("DELETE FROM app_settings WHERE app=?", (app,))
        else:
            await self._execute(
                "INSERT INTO app_settings (app, spec, updated_at) VALUES (?,?,?) ON CONFLICT"
                " (app) DO UPDATE SET spec=excluded.spec, updated_at=excluded.updated_at",
                (app, json.dumps(spec), float(now)),
            )

    async def sends_since(self, since: float) -> list[tuple[str, SendRow]]:
        """Every send record newer than ``since`` as (app, row), oldest first."""
        rows = await self._rows(
            "SELECT app, user_key, at, category, campaign, variant, message_id FROM sends"
            " WHERE at>=? ORDER BY at",
            float(since),
        )
        return [
            (r[0], SendRow(user_key=r[1], at=r[2], category=r[3], campaign=r[4], variant=r[5],
                           message_id=r[6]))
            for r in rows
        ]  # fmt: skip

    async def count_pending(self, app: str, campaign: str) -> int:
        """How much work a campaign still has pending."""
        r = await self._row(
            "SELECT COUNT(*) FROM pending_sends WHERE app=? AND campaign=?", app, campaign
        )
        return int(r[0]) if r else 0

    async def run_events(self, app: str, campaign: str) -> list[dict[str, Any]]:
        """The ``event`` of each campaign-wide pending row of a campaign (its runs and
        checks; a run under way keeps its cursor there, see :class:`Progress`)."""
        rows = await self._rows(
            "SELECT event FROM pending_sends WHERE app=? AND campaign=? AND user_key IS NULL"
            " AND event IS NOT NULL",
            app,
            campaign,
        )
        return [json.loads(r[0]) for r in rows]

    async def drop_pending(self, app: str, campaign: str) -> None:
        """Forget a campaign's pending work (cancel)."""
        await self._execute("DELETE FROM pending_sends WHERE app=? AND campaign=?", (app, campaign))

    async def rollout_states(self, app: str) -> dict[str, dict[str, Any]]:
        """The stored roll-out state of each of an app's campaigns that has one."""
        rows = await self._rows(
            "SELECT id, rollout FROM campaigns WHERE app=? AND rollout IS NOT NULL", app
        )
        return {r[0]: json.loads(r[1]) for r in rows}

    async def cohorts(
        self, app: str, campaign: str, within_s: float
    ) -> list[tuple[str, str | None, str, float, float | None]]:
        """``(group, variant, user, start, returned_at)`` of everyone a campaign measures.

        Groups: ``sent`` (start: the user's first send), ``exposed`` (the first display, inbox
        read or click of the user's message) and ``holdout`` (the first decision that held the
        user out). ``returned_at``: for ``sent`` and ``holdout``, the user's first event after
        ``start`` and at most ``within_s`` after it, else None.
        """
        rows = await self._rows(
            "WITH starts (grp, variant, user_key, start) AS ("
            " SELECT 'sent', variant, user_key, MIN(at) FROM sends WHERE app=?"
            " AND campaign=? GROUP BY variant, user_key"
            " UNION ALL SELECT 'exposed', s.variant, s.user_key, MIN(r.ts) FROM sends s"
            " JOIN receipts r ON r.app=s.app AND r.message_id=s.message_id"
            " AND r.kind IN ('displayed', 'read', 'clicked') WHERE s.app=? AND s.campaign=?"
            " GROUP BY s.variant, s.user_key"
            " UNION ALL SELECT 'holdout', variant, user_key, MIN(at) FROM decisions"
            " WHERE app=? AND campaign=? AND reason='holdout' GROUP BY variant, user_key)"
            " SELECT grp, variant, user_key, start, CASE WHEN grp='exposed' THEN NULL ELSE"
            " (SELECT MIN(e.ts) FROM events e WHERE e.app=? AND e.user_key=starts.user_key"
            " AND e.ts>starts.start AND e.ts<=starts.start+?) END FROM starts"
            " ORDER BY grp, variant COLLATE BINARY, user_key COLLATE BINARY",
            *(app, campaign) * 3,
            app,
            float(within_s),
        )
        return [(r[0], r[1], r[2], float(r[3]), None if r[4] is None else float(r[4]))
                for r in rows]  # fmt: skip

    async def undisplayed_messages(self, app: str, campaign: str) -> list[str]:
        """Ids of a campaign's messages that no device has displayed yet."""
        rows = await self._rows(
            "SELECT m.id FROM messages m WHERE m.app=? AND m.campaign=? AND NOT m.revoked"
            " AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.app=m.app AND r.message_id=m.id"
            " AND r.kind='displayed')",
            app,
            campaign,
        )
        return [r[0] for r in rows]

    async def devices_of_keys(self, app: str, user_keys: Sequence[str]) -> list[tuple[str, str]]:
        """(device_id, user key) of every known device of these profiles (anonymous too)."""
        named = [k for k in user_keys if not k.startswith("~")]
        out = await self.devices_of_users(app, named) if named else []
        anonymous = [k[1:] for k in user_keys if k.startswith("~")]
        if anonymous:
            rows = await self._rows_in(
                "SELECT device_id FROM devices WHERE app=? AND user_id IS NULL"
                " AND device_id IN ({marks})",
                app,
                anonymous,
            )
            out += [(r[0], anonymous_key(r[0])) for r in rows]
        return out

    async def finish_request(self, app: str, key: str, status: int, answer: str) -> None:
        """Record the answer of a request made under ``key``."""
        await self._execute(
            "UPDATE requests SET status=?, answer=? WHERE app=? AND key=?",
            (status, answer, app, key),
        )

    async def abandon_request(self, app: str, key: str) -> None:
        """Give ``key`` back: the request failed before doing anything, a retry may run."""
        await self._execute(
            "DELETE FROM requests WHERE app=? AND key=? AND status IS NULL", (app, key)
        )

    async def next_due(self) -> float | None:
        """When the earliest pending work may be claimed (not paused; lease over), or None."""
        r = await self._row(
            "SELECT MIN(CASE WHEN due_at > claim_until THEN due_at ELSE claim_until END)"
            f" FROM pending_sends p WHERE NOT EXISTS ({PAUSED})"
        )
        return None if r is None or r[0] is None else float(r[0])

    async def decisions(
        self, app: str, campaign: str, user_key: str | None = None, limit: int = 100
    ) -> list[DecisionRow]:
        """The decision log of a campaign (for one user, or everyone), newest first."""
        sql = (
            f"SELECT campaign, user_key, at, reason, detail, variant, message_id, {self.ROW_ID}"
            " FROM decisions WHERE app=? AND campaign=?"
        )
        params: list[Any] = [app, campaign]
        if user_key is not None:
            sql += " AND user_key=?"
            params.append(user_key)
        rows = await self._rows(
            sql + f" ORDER BY at DESC, {self.ROW_ID} DESC LIMIT ?", *params, limit
        )
        return [
            DecisionRow(campaign=r[0], user_key=r[1], at=r[2], reason=r[3], detail=r[4],
                        variant=r[5], message_id=r[6], seq=int(r[7]))
            for r in rows
        ]  # fmt: skip

    async def funnel_counts(self, app: str, campaign: str) -> dict[str | None, dict[str, int]]:
        """Per variant: targeted, sent, delivered, displayed, clicked, dismissed counts (one
        statement, so one snapshot)."""
        queries = (
            "SELECT variant, 'targeted', COUNT(DISTINCT user_key) FROM decisions"
            " WHERE app=? AND campaign=? AND reason NOT IN ('not_in_segment', 'trigger_filter',"
            " 'outside_trigger_window', 'campaign_inactive', 'scheduled') GROUP BY variant",
            "SELECT variant, 'sent', COUNT(*) FROM sends WHERE app=? AND campaign=?"
            " GROUP BY variant",
            "SELECT s.variant, 'delivered', COUNT(DISTINCT s.message_id) FROM sends s"
            f" WHERE s.app=? AND s.campaign=? AND {self._delivered()} GROUP BY s.variant",
            "SELECT s.variant, r.kind, COUNT(DISTINCT s.message_id) FROM sends s"
            " JOIN receipts r ON r.app=s.app AND r.message_id=s.message_id"
            " WHERE s.app=? AND s.campaign=? GROUP BY s.variant, r.kind",
        )
        out: dict[str | None, dict[str, int]] = {}
        for variant, stage, n in await self._rows(" UNION ALL ".join(queries),
                                                  *(app, campaign) * 4):  # fmt: skip
            out.setdefault(variant, {})[stage] = int(n)
        return out

    async def channel_counts(
        self, app: str, campaign: str
    ) -> dict[str | None, dict[str, dict[str, int]]]:
        """Per variant, per message kind: messages delivered, with each receipt kind, and seen.

        Each message counts once per stage, however many of the user's devices reported it;
        ``seen`` counts the messages displayed, read or clicked (a click implies it was seen).
        """
        join = " FROM sends s JOIN messages m ON m.app=s.app AND m.id=s.message_id"
        queries = (
            "SELECT s.variant, m.kind, 'delivered', COUNT(DISTINCT s.message_id)" + join
            + f" WHERE s.app=? AND s.campaign=? AND {self._delivered()}"
            " GROUP BY s.variant, m.kind",
            "SELECT s.variant, m.kind, r.kind, COUNT(DISTINCT s.message_id)" + join
            + " JOIN receipts r ON r.app=s.app AND r.message_id=s.message_id"
            " WHERE s.app=? AND s.campaign=? GROUP BY s.variant, m.kind, r.kind",
            "SELECT s.variant, m.kind, 'seen', COUNT(DISTINCT s.message_id)" + join
            + " JOIN receipts r ON r.app=s.app AND r.message_id=s.message_id"
            " AND r.kind IN ('displayed', 'read', 'clicked')"
            " WHERE s.app=? AND s.campaign=? GROUP BY s.variant, m.kind",
        )  # fmt: skip
        # One statement, so one snapshot: a receipt (which proves its delivery) stored while
        # this reads cannot count as seen without counting as delivered.
        rows = await self._rows(" UNION ALL ".join(queries), *(app, campaign) * 3)
        out: dict[str | None, dict[str, dict[str, int]]] = {}
        for variant, kind, stage, n in rows:
            out.setdefault(variant, {}).setdefault(kind, {})[stage] = int(n)
        return out

    async def funnel_by_day(self, app: str, campaign: str) -> dict[int, dict[str, int]]:
        """Per day (``int(ts // 86400)``, UTC): the campaign's sends, and its messages first
        delivered, first seen (displayed, read or clicked) and first clicked that day."""
        first = (
            "SELECT '{}', MIN(r.ts) FROM sends s JOIN receipts r ON r.app=s.app"
            " AND r.message_id=s.message_id AND r.kind IN {}"
            " WHERE s.app=? AND s.campaign=? GROUP BY s.message_id"
        )
        seen = first.format("displayed", "('displayed', 'read', 'clicked')")
        clicked = first.format("clicked", "('clicked')")
        rows = await self._rows(
            f"SELECT {self.DAY_OF.format('t')}, stage, COUNT(*) FROM ("
            " SELECT 'sent' AS stage, at AS t FROM sends WHERE app=? AND campaign=?"
            f" UNION ALL SELECT 'delivered', MIN(d.acked_at) FROM sends s JOIN {self.DELIVERIES}"
            " ON d.app=s.app AND d.message_id=s.message_id AND d.state=1"
            " AND d.acked_at IS NOT NULL WHERE s.app=? AND s.campaign=? GROUP BY s.message_id"
            f" UNION ALL {seen} UNION ALL {clicked}"
            ") AS f GROUP BY 1, 2",
            *(app, campaign) * 4,
        )
        out: dict[int, dict[str, int]] = {}
        for day, stage, n in rows:
            out.setdefault(int(day), {})[stage] = int(n)
        return out

    async def inbox_since(self, app: str, user_key: str, ver: int) -> tuple[int, list[InboxChange]]:
        """The user's inbox version and every change after ``ver``."""
        # One read (one snapshot, one trip; a hello makes it): the version on every row, and
        # a row with no change when there is none.
        rows = await self._rows(
            "SELECT u.inbox_ver, s.message_id, s.state, s.ver FROM users u LEFT JOIN inbox_state"
            " s ON s.app=u.app AND s.user_key=u.user_key AND s.ver>? WHERE u.app=? AND"
            " u.user_key=? ORDER BY s.ver",
            ver,
            app,
            user_key,
        )
        current = int(rows[0][0]) if rows else 0
        changes = [InboxChange(id=m, state=st, ver=int(v)) for _, m, st, v in rows
                   if m is not None]  # fmt: skip
        return current, changes

    async def resume_state(
        self, app: str, device: str, user_key: str, after: int, inbox_ver: int, now: float
    ) -> ResumeState:
        """What a device resuming after sequence number ``after`` is owed (its hello): its
        queue, with the user's inbox messages it does not hold queued first
        (:meth:`fill_inbox`), and the user's inbox changes after ``inbox_ver``.

        One statement (:data:`RESUME`) when the inbox has nothing the device lacks, which is
        almost every hello; otherwise the inbox is filled and the queue read again.
        """
        now = float(now)
        rows = await self._rows(RESUME, app, device, after, now, app, user_key, now, device,
                                after, inbox_ver, app, user_key)  # fmt: skip
        pending = sorted(
            (PendingDelivery(seq=int(r[1]), message_id=r[2], wire=bytes(r[3]),
                             inbox_only=bool(r[4])) for r in rows if r[0] == "p"),
            key=lambda p: p.seq,
        )  # fmt: skip
        inbox = [r for r in rows if r[0] == "i"]
        changes = sorted(
            (InboxChange(id=r[2], state=r[5], ver=int(r[1])) for r in inbox if r[2] is not None),
            key=lambda c: c.ver,
        )
        if any(r[0] == "m" for r in rows) and await self.fill_inbox(app, device, user_key,
                                                                     after, now):  # fmt: skip
            pending = await self.pending(app, device, after, now)
        return ResumeState(pending=pending, inbox_ver=int(inbox[0][6]) if inbox else 0,
                           changes=changes)  # fmt: skip

    async def fill_inbox(
        self, app: str, device: str, user_key: str, resume: int, now: float
    ) -> int:
        raise NotImplementedError

    def _delivered(self) -> str:
        """A campaign's send ``s`` was acknowledged by a device (probed by message)."""
        return (f"EXISTS (SELECT 1 FROM {self.DELIVERIES} WHERE d.app=s.app"
                " AND d.message_id=s.message_id AND d.state=1)")  # fmt: skip
