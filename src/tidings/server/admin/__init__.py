"""The admin HTTP API (FastAPI) and the server that runs it beside the gateway node."""

from __future__ import annotations

from tidings.server.admin.api import MAX_REQUEST_BYTES, MAX_TARGETS, ApiError, create_admin_app
from tidings.server.admin.serve import AdminServer

__all__ = ["MAX_REQUEST_BYTES", "MAX_TARGETS", "AdminServer", "ApiError", "create_admin_app"]
