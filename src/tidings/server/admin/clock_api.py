"""Admin endpoints for the gateway's clock: read it, and move a simulated one.

::

    GET /v1/clock   the gateway's time: now, speed, paused, simulated, real_time   200
    PUT /v1/clock   change a simulated clock: speed, paused, now (forward only)    200, 409, 422

Only a gateway started with ``clock = "simulated"`` (``--clock simulated``) can be moved, and
such a gateway hosts development apps only (the config refuses anything else), so a production
gateway's time is never the admin API's to change. Time never runs backwards: a ``now`` before
the clock is refused (``422``). Any app's admin key may read or move the clock: it is the
gateway's, shared by every app it hosts.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI
from pydantic import BaseModel, Field

from tidings.protocol import codes
from tidings.protocol.simtime import MAX_SPEED
from tidings.server.admin.common import ERR_CONFLICT, ERRORS, ApiError, Caller, Model
from tidings.server.node import Node

__all__ = ["ClockBody", "ClockJSON", "install"]


class ClockBody(Model):
    """What to change; fields left out keep their value."""

    speed: Annotated[float, Field(gt=0, le=MAX_SPEED)] | None = Field(
        default=None, description="Simulated seconds per real second (3600: an hour a second)."
    )
    paused: bool | None = Field(default=None, description="Stop or restart simulated time.")
    now: Annotated[float, Field(ge=0)] | None = Field(
        default=None,
        description="Jump to this unix time (seconds); never earlier than the clock.",
    )


class ClockJSON(BaseModel):
    """The gateway's clock as read now."""

    now: float = Field(description="The gateway's (simulated) unix time, seconds.")
    speed: float = Field(description="Simulated seconds per real second (1 for the system clock).")
    paused: bool
    simulated: bool = Field(description="True when the gateway runs on the simulated clock.")
    real_time: float = Field(
        description="Real unix time at which ``now`` was read: a process on the same machine "
        "follows the clock exactly with now + (its real time - real_time) * speed."
    )


def _json(node: Node) -> ClockJSON:
    sim = node.sim_clock
    if sim is None:
        now = node.clock()
        return ClockJSON(now=now, speed=1.0, paused=False, simulated=False, real_time=now)
    state = sim.state()
    return ClockJSON(now=state.now, speed=state.speed, paused=state.paused, simulated=True,
                     real_time=state.real)  # fmt: skip


def install(api: FastAPI, node: Node) -> None:
    """Add the clock endpoints to the admin app."""
    errors = {**ERRORS, 409: {"description": "The gateway runs on the system clock."}}

    @api.get("/v1/clock", response_model=ClockJSON, responses=ERRORS, tags=["clock"],
             summary="The gateway's clock")  # fmt: skip
    async def get_clock(key_app: Caller) -> ClockJSON:
        """The gateway's time; with ``simulated`` true it is the simulated clock that every
        campaign, cap, lifecycle stage and send time of the gateway follows."""
        return _json(node)

    @api.put("/v1/clock", response_model=ClockJSON, responses=errors, tags=["clock"],
             summary="Change the simulated clock")  # fmt: skip
    async def put_clock(body: ClockBody, key_app: Caller) -> ClockJSON:
        """Change speed, pause or resume, or jump forward (development gateways only).

        Every timer of the gateway (scheduled sends, lifecycle changes, trigger delays)
        re-plans at once; simulated devices following the clock pick the change up too.
        """
        sim = node.sim_clock
        if sim is None:
            raise ApiError(409, ERR_CONFLICT, "clock: this gateway runs on the system clock; "
                           "start it with --clock simulated (development apps only) to move "
                           "time", field="clock")  # fmt: skip
        try:
            sim.set(now=body.now, speed=body.speed, paused=body.paused)
        except ValueError as exc:
            field = str(exc).partition(":")[0]
            raise ApiError(422, codes.ERR_INVALID_FIELD, str(exc), field=field) from None
        return _json(node)
