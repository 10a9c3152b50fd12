"""Admin endpoints for targeting: segment preview (more to come: tag rules, users, campaigns)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from tidings.protocol import codes
from tidings.server.admin.api import _ERRORS, ApiError, Caller, _Model, _resolve
from tidings.server.node import Node
from tidings.server.targeting import segments

__all__ = ["MAX_SAMPLE", "install"]

MAX_SAMPLE = 100
"""Most user ids a preview returns as its sample."""


class PreviewBody(_Model):
    """A segment as text (``text``) or as its JSON tree (``segment``): exactly one."""

    app: str = Field(min_length=1, max_length=64)
    text: str | None = Field(default=None, max_length=segments.MAX_SEGMENT_TEXT)
    segment: dict[str, Any] | None = None
    sample: int = Field(default=10, ge=0, le=MAX_SAMPLE)


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
        raise ApiError(422, codes.ERR_INVALID_FIELD, f"text: {exc.reason}", field="text") from None
    except segments.SegmentError as exc:
        path = getattr(exc, "path", "$")
        raise ApiError(422, codes.ERR_INVALID_FIELD, f"segment: {exc.reason}",
                       field="segment" + str(path).removeprefix("$")) from None  # fmt: skip


def install(api: FastAPI, node: Node) -> None:
    """Add the targeting endpoints to the admin app."""

    @api.post(
        "/v1/segments/preview",
        response_model=Preview,
        responses=_ERRORS,
        summary="Preview a segment's audience",
        tags=["targeting"],
    )
    async def preview_segment(body: PreviewBody, key_app: Caller) -> Preview:
        """Count the users a segment selects now and return a sample of their ids.

        The text form and the JSON tree are equivalent; the answer carries both, canonical.
        """
        target = _resolve(node, body.app, key_app, "app")
        tree = _tree(body)
        count, sample = await node.engine.preview(target.id, tree, sample=body.sample)
        return Preview(count=count, sample=sample, segment=segments.to_json(tree),
                       text=segments.to_text(tree))  # fmt: skip
