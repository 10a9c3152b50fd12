"""Admin endpoints for campaigns: create, edit, run, read stats and the decision log.

::

    POST   /v1/campaigns                          create a draft (body: campaign JSON)   201
    GET    /v1/campaigns?app=A                    every campaign of the app              200
    GET    /v1/campaigns/{id}?app=A               one campaign                           200
    PUT    /v1/campaigns/{id}                     replace a draft or paused campaign     200, 409
    DELETE /v1/campaigns/{id}?app=A               delete a draft                         204, 409
    POST   /v1/campaigns/{id}/start?app=A         start (or resume) it                   200, 409
    POST   /v1/campaigns/{id}/pause?app=A         pause it                               200, 409
    POST   /v1/campaigns/{id}/cancel?app=A        cancel it, revoke undisplayed messages 200, 409
    GET    /v1/campaigns/{id}/stats?app=A         funnels, lift, retention, verdict      200
    GET    /v1/campaigns/{id}/decisions?app=A     why each user did or did not get it    200

The body of ``POST`` and ``PUT`` is the campaign JSON of
:mod:`tidings.server.campaigns.model`; the engine validates it, templates included, and its
errors name the field (``content.title``, ``segment``, ``variants[1].content.body``). The
node's ``NotFound`` and ``Conflict`` become ``404`` and ``409`` in the API's one error handler.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator

from tidings.protocol import codes, limits
from tidings.server.admin.common import (
    ERRORS,
    ONE_LINE,
    ApiError,
    Caller,
    ErrorBody,
    IdempotencyKey,
    PathId,
    QueryApp,
    check_document,
    once,
    one_line,
    resolve_app,
)
from tidings.server.campaigns.model import Campaign
from tidings.server.node import Node

__all__ = ["MAX_DECISIONS", "install"]

MAX_DECISIONS = 1_000
"""Most decision log entries one request returns."""

_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {"model": ErrorBody, "description": "The campaign's status refuses the request."},
}

_EXAMPLE = {
    "id": "spring-sale",
    "app": "demo",
    "name": "Spring sale",
    "kind": "one_off",
    "segment": "tag:sports_fan and lifecycle in (active, new)",
    "content": {
        "kind": "banner",
        "title": "Hi {{ user.first_name | default('there') }}",
        "body": "20% off running shoes today",
        "category": "marketing",
    },
    "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1,
                                             "content": {"title": "Spring sale!"}}],
    "control_share": 0.1,
    "conversion": {"event": "order_paid", "where": {"sku": "shoes"}, "window_s": 259200},
    "min_sample_per_variant": 500,
    "rollout": {"test_share": 0.2, "decide_after_s": 86400},
}  # fmt: skip

CampaignBody = Annotated[
    dict[str, Any],
    Body(
        description="The campaign JSON (see the campaigns model); ``app`` names the app.",
        openapi_examples={"one_off": {"summary": "A one-off A/B test", "value": _EXAMPLE}},
    ),
]


def _campaign_json(campaign: Campaign, sent_total: int) -> dict[str, Any]:
    return {**campaign.to_json(), "sent_total": sent_total}


def install(api: FastAPI, node: Node) -> None:
    """Add the campaign endpoints to the admin app."""
    engine = node.engine

    def _app_of(body: dict[str, Any], key_app: Any) -> str:
        app = body.get("app")
        if not isinstance(app, str) or not app:
            raise ApiError(422, codes.ERR_INVALID_FIELD, "app: required, the app's id",
                           field="app")  # fmt: skip
        check_document(body, "")
        return resolve_app(node, app, key_app, "app").id

    @api.post("/v1/campaigns", status_code=201, responses=_RESPONSES,
              summary="Create a campaign", tags=["campaigns"])  # fmt: skip
    async def create_campaign(
        body: CampaignBody, key_app: Caller, request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> Any:  # fmt: skip
        """Validate and store a new campaign as a draft; ``start`` runs it.

        A template that does not compile, uses an unknown variable without a default, or
        renders longer than the app's limits is refused here, naming the field.
        """
        app = _app_of(body, key_app)

        async def create() -> dict[str, Any]:
            return _campaign_json(await engine.save(body), 0)

        return await once(request, app, idempotency_key, body, 201, create)

    @api.get("/v1/campaigns", responses=_RESPONSES, summary="List campaigns",
             tags=["campaigns"])  # fmt: skip
    async def list_campaigns(target: QueryApp) -> dict[str, Any]:
        """Every campaign of the app, oldest first, with its sent total."""
        return {"campaigns": [_campaign_json(c, n) for c, n in engine.campaigns(target.id)]}

    @api.get("/v1/campaigns/{campaign_id}", responses=_RESPONSES, summary="Read a campaign",
             tags=["campaigns"])  # fmt: skip
    async def get_campaign(campaign_id: PathId, target: QueryApp) -> dict[str, Any]:
        """One campaign with its status and sent total."""
        return _campaign_json(*engine.campaign(target.id, campaign_id))

    @api.put("/v1/campaigns/{campaign_id}", responses=_RESPONSES, summary="Replace a campaign",
             tags=["campaigns"])  # fmt: skip
    async def replace_campaign(
        campaign_id: PathId, body: CampaignBody, key_app: Caller
    ) -> dict[str, Any]:
        """Replace a draft or paused campaign (``409`` once it runs or is over).

        The body's ``id`` must be the path's.
        """
        app = _app_of(body, key_app)
        if body.get("id") != campaign_id:
            raise ApiError(422, codes.ERR_INVALID_FIELD,
                           f"id: must match the path ({campaign_id!r})", field="id")  # fmt: skip
        campaign = await engine.save(body, replace_existing=True)
        return _campaign_json(*engine.campaign(app, campaign.id))

    @api.delete("/v1/campaigns/{campaign_id}", status_code=204, response_class=Response,
                responses=_RESPONSES, summary="Delete a draft campaign",
                tags=["campaigns"])  # fmt: skip
    async def delete_campaign(campaign_id: PathId, target: QueryApp) -> Response:
        """Delete a campaign that never ran; a started one is cancelled instead (``409``)."""
        await engine.delete(target.id, campaign_id)
        return Response(status_code=204)

    @api.post("/v1/campaigns/{campaign_id}/start", responses=_RESPONSES,
              summary="Start or resume a campaign", tags=["campaigns"])  # fmt: skip
    async def start_campaign(
        campaign_id: PathId, target: QueryApp, request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> Any:  # fmt: skip
        """Start a draft or resume a paused campaign. A one-off campaign decides for its whole
        audience before this answers; the decision log says what happened to each user.

        When the audience was decided now, ``no_device`` counts users with no device yet
        whose inbox keeps the message for their first device, and ``skipped`` counts the
        users not sent to for that reason (``{"no_device": n}``: a banner-only message)."""

        async def start() -> dict[str, Any]:
            before = engine.last_run(target.id, campaign_id)
            await engine.start_campaign(target.id, campaign_id)
            answer = _campaign_json(*engine.campaign(target.id, campaign_id))
            run = engine.last_run(target.id, campaign_id)
            if run and run != before:
                answer["no_device"] = run["no_device"]
                answer["skipped"] = ({"no_device": run["skipped_no_device"]}
                                     if run["skipped_no_device"] else {})  # fmt: skip
            return answer

        return await once(request, target.id, idempotency_key, None, 200, start)

    @api.post("/v1/campaigns/{campaign_id}/pause", responses=_RESPONSES,
              summary="Pause a campaign", tags=["campaigns"])  # fmt: skip
    async def pause_campaign(campaign_id: PathId, target: QueryApp) -> dict[str, Any]:
        """Pause a running campaign: triggers are ignored and pending sends wait."""
        await engine.pause(target.id, campaign_id)
        return _campaign_json(*engine.campaign(target.id, campaign_id))

    @api.post("/v1/campaigns/{campaign_id}/cancel", responses=_RESPONSES,
              summary="Cancel a campaign", tags=["campaigns"])  # fmt: skip
    async def cancel_campaign(campaign_id: PathId, target: QueryApp) -> dict[str, Any]:
        """Cancel a campaign: pending sends are dropped and messages not yet displayed are
        revoked from devices; ``revoked`` counts them."""
        _, revoked = await engine.cancel(target.id, campaign_id)
        return {**_campaign_json(*engine.campaign(target.id, campaign_id)), "revoked": revoked}

    @api.get("/v1/campaigns/{campaign_id}/stats", responses=_RESPONSES,
             summary="Campaign funnel stats", tags=["campaigns"])  # fmt: skip
    async def campaign_stats(campaign_id: PathId, target: QueryApp) -> dict[str, Any]:
        """Per-variant funnels (targeted, sent, delivered, displayed, clicked, dismissed,
        converted, rates) and per channel (banner, inbox, both: one stage per receipt kind),
        totals, the control group and each variant's lift over it (with a 95 % Newcombe
        interval), retention after 1 and 7 days, the A/B verdict with its reason, and the
        roll-out phase; the README's "Measuring campaigns" says what each one counts."""
        return await engine.stats(target.id, campaign_id)

    @api.get("/v1/campaigns/{campaign_id}/decisions", responses=_RESPONSES,
             summary="Campaign decision log", tags=["campaigns"])  # fmt: skip
    async def campaign_decisions(
        campaign_id: PathId,
        target: QueryApp,
        user: Annotated[
            str | None,
            Query(min_length=1, max_length=limits.MAX_ID_LEN, json_schema_extra=ONE_LINE),
            AfterValidator(lambda v: v if v is None else one_line(v)),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_DECISIONS)] = 100,
    ) -> dict[str, Any]:
        """Why users did or did not get the campaign's message, newest first (``user``
        narrows it to one user): sent, scheduled, not_in_segment, opted_out, capped_*, ...

        ``seq`` orders entries logged at the same time. With ``user``, each decision that sent
        a message lists what happened to it after, oldest first (``after``): delivered (a
        device acknowledged it), displayed, clicked, dismissed, expired (a banner expired
        unseen) per device, and the user's inbox state read / unread / deleted."""
        rows = await engine.decisions(target.id, campaign_id, user, limit)
        fates: dict[str, list[dict[str, Any]]] = {}
        sent = [r.message_id for r in rows if r.message_id is not None]
        if user is not None and sent:
            for f in await node.store.fates(target.id, user, sent):
                fates.setdefault(f.message_id, []).append(
                    {"what": f.what, "at": f.at, "device": f.device, "action": f.action}
                )
        return {
            "decisions": [
                {"user": r.user_key, "at": r.at, "seq": r.seq, "reason": r.reason,
                 "detail": r.detail, "variant": r.variant, "message_id": r.message_id,
                 **({"after": fates.get(r.message_id, [])}
                    if user is not None and r.message_id is not None else {})}
                for r in rows
            ]
        }  # fmt: skip
