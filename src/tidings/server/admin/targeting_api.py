"""Admin endpoints for targeting: segment preview, tag rules, user profiles and events.

::

    POST   /v1/segments/preview        audience size and a sample                 200
    GET    /v1/tag-rules?app=A         the app's tag rules                        200
    GET    /v1/tag-rules/{name}?app=A  one rule                                   200, 404
    PUT    /v1/tag-rules/{name}?app=A  create or replace a rule (body: rule JSON)  200, 422
    DELETE /v1/tag-rules/{name}?app=A  delete a rule; holders lose the tag        204, 404
    GET    /v1/users/{id}?app=A        the live profile                           200, 404
    PATCH  /v1/users/{id}              merge attributes, set consent              200, 422
    GET    /v1/users/{id}/export?app=A everything stored about the user           200
    DELETE /v1/users/{id}?app=A        erase the user                             204, 404
    POST   /v1/events                  server-side behaviour events               202, 422
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Body, FastAPI
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tidings.protocol import codes, limits
from tidings.protocol.codec import decode_map
from tidings.protocol.errors import TidingsError
from tidings.protocol.frames import Event, Message
from tidings.server.admin.common import (
    ERRORS,
    JSON_OBJECT_SCHEMA,
    ONE_LINE,
    ApiError,
    AppId,
    Caller,
    Ident,
    Integral,
    Model,
    PathId,
    QueryApp,
    check_document,
    field_error,
    json_object,
    non_null,
    one_line,
    resolve_app,
)
from tidings.server.node import Node
from tidings.server.targeting import segments
from tidings.server.targeting.profiles import TRANSACTIONAL, Profile
from tidings.server.targeting.tags import TagRule

__all__ = ["MAX_SAMPLE", "install", "profile_json"]

MAX_SAMPLE = 100
"""Most user ids a preview returns as its sample."""


class PreviewBody(Model):
    """A segment as text (``text``) or as its JSON tree (``segment``): exactly one."""

    app: str = Field(min_length=1, max_length=64)
    text: str | None = Field(default=None, max_length=segments.MAX_SEGMENT_TEXT)
    segment: dict[str, Any] | None = None
    sample: Annotated[int, Field(ge=0, le=MAX_SAMPLE), Integral] = 10


class Preview(BaseModel):
    """The audience a segment selects now."""

    count: int
    sample: list[str]
    segment: dict[str, Any]
    text: str


def _tree(body: PreviewBody) -> segments.Node:
    if (body.text is None) == (body.segment is None):
        raise ApiError(422, codes.ERR_INVALID_FIELD, "text: give exactly one of text or segment",
                       field="text")  # fmt: skip
    try:
        if body.text is not None:
            return segments.parse(body.text)
        return segments.from_json(body.segment)
    except segments.SegmentSyntaxError as exc:
        raise ApiError(422, codes.ERR_INVALID_FIELD, exc.under("text: "), field="text") from None
    except segments.SegmentError as exc:
        path = getattr(exc, "path", "$")
        raise ApiError(422, codes.ERR_INVALID_FIELD, f"segment: {exc.reason}",
                       field="segment" + str(path).removeprefix("$")) from None  # fmt: skip


Name = Annotated[
    str,
    Field(min_length=1, max_length=limits.MAX_NAME_LEN, json_schema_extra=ONE_LINE),
    AfterValidator(one_line),
]


class UserPatch(Model):
    """``PATCH /v1/users/{id}``: merge attributes (``null`` removes one) and set consent."""

    model_config = ConfigDict(json_schema_extra=non_null("attrs", "consent"))

    app: AppId
    attrs: Annotated[dict[str, Any], AfterValidator(json_object("attrs"))] | None = Field(
        default=None, json_schema_extra=JSON_OBJECT_SCHEMA
    )
    consent: dict[Name, bool] | None = Field(
        default=None,
        max_length=limits.MAX_KEYS,
        json_schema_extra={
            "propertyNames": {"minLength": 1, "maxLength": limits.MAX_NAME_LEN, **ONE_LINE}
        },
    )

    @model_validator(mode="after")
    def _transactional_is_mandatory(self) -> UserPatch:
        if self.consent and self.consent.get(TRANSACTIONAL) is False:
            raise field_error(f"consent.{TRANSACTIONAL}",
                               f"consent.{TRANSACTIONAL}: transactional messages cannot be "
                               "refused")  # fmt: skip
        return self


class EventIn(Model):
    """One behaviour event; ``id`` de-duplicates resends, ``ts`` is unix ms (default now)."""

    id: Ident | None = None
    name: Name
    props: Annotated[dict[str, Any], AfterValidator(json_object("props"))] = Field(
        default_factory=dict, json_schema_extra=JSON_OBJECT_SCHEMA
    )
    ts: Annotated[int, Field(ge=0, le=limits.MAX_INT), Integral] | None = None


class EventsBody(Model):
    """``POST /v1/events``: events of one user, e.g. purchases reported by the app's backend."""

    app: AppId
    user: Ident
    events: list[EventIn] = Field(min_length=1, max_length=limits.MAX_EVENTS_PER_BATCH)


class EventsAccepted(BaseModel):
    """``202``: the events are stored and the profile, tags and triggers updated."""

    accepted: int


def profile_json(p: Profile) -> dict[str, Any]:
    """The admin API's view of a live profile."""
    return {
        "user": p.user_id, "app": p.app, "attrs": dict(p.attrs), "tags": sorted(p.tags),
        "lifecycle": str(p.lifecycle), "tier": str(p.tier), "active_hours": list(p.active_hours),
        "consent": dict(p.consent), "first_seen": p.first_seen, "last_seen": p.last_seen,
        "tz": p.tz, "locale": p.locale, "platform": p.platform, "app_version": p.app_version,
        "purchase_count": p.purchase_count, "purchase_total": p.purchase_total,
        "last_purchase": p.last_purchase,
    }  # fmt: skip


def _readable_message(wire: bytes | None) -> dict[str, Any]:
    if wire is None:
        return {}
    try:
        m = Message.from_wire(decode_map(wire))
    except TidingsError:
        return {}
    return {"kind": m.kind, "title": m.title, "body": m.body}


_RULE_EXAMPLE = {
    "name": "sports_fan", "event": "view_content",
    "where": [{"prop": "category", "op": "eq", "value": "sports"}],
    "threshold": {"count": 3}, "window_s": 604800,
}  # fmt: skip


_SETTINGS_EXAMPLE = {
    "categories": ["promotions", "news", "reminders"],
    "value_event": {"name": "order_paid", "amount": "total"},
    "caps": {"lifecycle": {"active": {"limit": 5, "days": 7}}},
    "thresholds": {"churned_after_days": 45},
}  # fmt: skip


def install(api: FastAPI, node: Node) -> None:
    """Add the targeting endpoints to the admin app."""

    @api.post(
        "/v1/segments/preview",
        response_model=Preview,
        responses=ERRORS,
        summary="Preview a segment's audience",
        tags=["targeting"],
    )
    async def preview_segment(body: PreviewBody, key_app: Caller) -> Preview:
        """Count the users a segment selects now and return a sample of their ids.

        The text form and the JSON tree are equivalent; the answer carries both, canonical.
        """
        target = resolve_app(node, body.app, key_app, "app")
        tree = _tree(body)
        count, sample = await node.engine.audience.preview(target.id, tree, sample=body.sample)
        return Preview(count=count, sample=sample, segment=segments.to_json(tree),
                       text=segments.to_text(tree))  # fmt: skip

    # --- tag rules ------------------------------------------------------------------------------

    @api.get("/v1/tag-rules", responses=ERRORS, summary="List tag rules", tags=["targeting"])
    async def list_tag_rules(target: QueryApp) -> dict[str, Any]:
        """The app's behaviour tag rules, by name."""
        return {"rules": [r.to_json() for r in node.engine.audience.tag_rules(target.id)]}

    def _rule(app: str, name: str) -> TagRule:
        for rule in node.engine.audience.tag_rules(app):
            if rule.name == name:
                return rule
        raise ApiError(404, codes.ERR_NOT_FOUND, f"name: no tag rule {name!r} in app {app!r}",
                       field="name")  # fmt: skip

    @api.get("/v1/tag-rules/{name}", responses=ERRORS, summary="Read a tag rule",
             tags=["targeting"])  # fmt: skip
    async def get_tag_rule(name: PathId, target: QueryApp) -> dict[str, Any]:
        """One tag rule."""
        return _rule(target.id, name).to_json()

    @api.put("/v1/tag-rules/{name}", responses=ERRORS, summary="Create or replace a tag rule",
             tags=["targeting"])  # fmt: skip
    async def put_tag_rule(
        name: PathId,
        target: QueryApp,
        rule: Annotated[
            dict[str, Any],
            Body(
                openapi_examples={
                    "count": {"summary": "3 sports views in 7 days", "value": _RULE_EXAMPLE}
                }
            ),
        ],
    ) -> dict[str, Any]:
        """Create or replace a tag rule (``name`` in the body, if given, must match the path).

        Stored events within the rule's window count at once: users who already qualify hold
        the tag when this answers.
        """
        check_document(rule, "")
        if rule.setdefault("name", name) != name:
            raise ApiError(422, codes.ERR_INVALID_FIELD,
                           f"name: must match the path ({name!r})", field="name")  # fmt: skip
        parsed = TagRule.from_json(rule)  # TagRuleError names the field: 422
        await node.engine.audience.put_tag_rule(target.id, parsed)
        return parsed.to_json()

    @api.delete("/v1/tag-rules/{name}", status_code=204, response_class=Response,
                responses=ERRORS, summary="Delete a tag rule", tags=["targeting"])  # fmt: skip
    async def delete_tag_rule(name: PathId, target: QueryApp) -> Response:
        """Delete a tag rule; users holding its tag lose it."""
        if not await node.engine.audience.delete_tag_rule(target.id, name):
            _rule(target.id, name)  # raises the 404
        return Response(status_code=204)

    # --- settings -------------------------------------------------------------------------------

    @api.get("/v1/settings", responses=ERRORS, summary="Read the app's settings",
             tags=["settings"])  # fmt: skip
    async def get_settings(target: QueryApp) -> dict[str, Any]:
        """The app's policy now, every key: categories, value event, caps, thresholds."""
        return node.engine.policy(target.id).to_json()

    @api.put("/v1/settings", responses=ERRORS, summary="Replace the app's settings",
             tags=["settings"])  # fmt: skip
    async def put_settings(
        target: QueryApp,
        settings: Annotated[
            dict[str, Any],
            Body(
                openapi_examples={
                    "seeds": {
                        "summary": "order_paid, 5 a week when active",
                        "value": _SETTINGS_EXAMPLE,
                    }
                }
            ),
        ],
    ) -> dict[str, Any]:
        """Replace the app's stored settings: what the document leaves out takes the value of
        the configuration file. Validated (422 names the key path), stored, in force at once on
        every node; the answer is the whole policy now."""
        check_document(settings, "")
        policy = await node.engine.set_settings(target.id, settings)
        return policy.to_json()

    @api.delete("/v1/settings", responses=ERRORS, summary="Reset the app's settings",
                tags=["settings"])  # fmt: skip
    async def reset_settings(target: QueryApp) -> dict[str, Any]:
        """Forget the stored settings: the configuration file's hold again (the answer)."""
        policy = await node.engine.set_settings(target.id, None)
        return policy.to_json()

    # --- users ----------------------------------------------------------------------------------

    def _profile(app: str, user: str) -> Profile:
        p = node.engine.audience.profile(app, user)
        if p is None:
            raise ApiError(404, codes.ERR_NOT_FOUND, f"id: no user {user!r} in app {app!r}",
                           field="id")  # fmt: skip
        return p

    @api.get("/v1/users/{user_id}", responses=ERRORS, summary="Read a user's profile",
             tags=["users"])  # fmt: skip
    async def get_user(user_id: PathId, target: QueryApp) -> dict[str, Any]:
        """The live profile: attributes, tags, lifecycle, tier, active hours, consent, device
        facts and purchase statistics."""
        return profile_json(_profile(target.id, user_id))

    @api.patch("/v1/users/{user_id}", responses=ERRORS, summary="Update a user's profile",
               tags=["users"])  # fmt: skip
    async def patch_user(user_id: PathId, body: UserPatch, key_app: Caller) -> dict[str, Any]:
        """Merge attributes (``null`` removes one) and set consent per category; creates the
        profile if the user is new. ``transactional`` consent cannot be refused."""
        target = resolve_app(node, body.app, key_app, "app")
        await node.ingest.attributes(target.id, user_id, body.attrs or {})
        if body.consent:
            await node.ingest.consent(target.id, user_id, body.consent)
        return profile_json(_profile(target.id, user_id))

    @api.get("/v1/users/{user_id}/export", responses=ERRORS, summary="Export a user's data",
             tags=["users"])  # fmt: skip
    async def export_user(user_id: PathId, target: QueryApp) -> dict[str, Any]:
        """Everything stored about a user (profile, devices, events, messages with their text,
        decisions, the inbox kept for them with its read state) and the live profile (``null``
        when nothing is known)."""
        data = await node.store.export_user(target.id, user_id)
        if not any(
            data[k] for k in ("user", "devices", "events", "messages", "decisions", "inbox")
        ):
            _profile(target.id, user_id)  # nothing stored: 404 unless a live profile exists
        data["messages"] = [
            {k: v for k, v in m.items() if k != "wire"} | _readable_message(m.get("wire"))
            for m in data["messages"]
        ]
        live = node.engine.audience.profile(target.id, user_id)
        data["profile"] = None if live is None else profile_json(live)
        return data

    @api.delete("/v1/users/{user_id}", status_code=204, response_class=Response,
                responses=ERRORS, summary="Erase a user", tags=["users"])  # fmt: skip
    async def erase_user(user_id: PathId, target: QueryApp) -> Response:
        """Erase a user: profile, events, messages, decisions, pending work and the messages
        still queued for their devices. Their devices still connected are disconnected
        (close 4007) and cannot write again until they reconnect."""
        if not await node.erase_user(target.id, user_id):
            _profile(target.id, user_id)  # raises the 404
        return Response(status_code=204)

    # --- events ---------------------------------------------------------------------------------

    @api.post("/v1/events", status_code=202, response_model=EventsAccepted, responses=ERRORS,
              summary="Report behaviour events", tags=["users"])  # fmt: skip
    async def post_events(body: EventsBody, key_app: Caller) -> EventsAccepted:
        """Store a user's events (e.g. purchases the app's backend saw); the profile, tags and
        triggered campaigns follow as if a device had sent them."""
        target = resolve_app(node, body.app, key_app, "app")
        now = node.clock()
        events = [
            Event(id=e.id or uuid.uuid4().hex, name=e.name,
                  ts=int(now * 1000) if e.ts is None else e.ts, props=e.props)
            for e in body.events
        ]  # fmt: skip
        await node.ingest.events(target.id, None, body.user, events)
        return EventsAccepted(accepted=len(events))
