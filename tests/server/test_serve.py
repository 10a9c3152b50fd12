"""The composition root: ``serve(config)`` starts a node and its admin API, and stops both."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import httpx
import pytest
from helpers import gateway_config

from tidings.server.app import CannotServe, serve


async def test_serve_starts_devices_and_admin_and_stops_both(tmp_path: Path) -> None:
    async with serve(gateway_config(tmp_path / "t.db")) as running:
        assert running.admin is not None
        port, url = running.node.port, running.admin.url
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(f"{url}/healthz")).status_code == 200
        assert f"ws://127.0.0.1:{port}" in running.banner("9.9")
    for p in (port, running.admin.port):
        with socket.socket() as probe:  # both listeners are closed
            assert probe.connect_ex(("127.0.0.1", p)) != 0


@pytest.mark.parametrize("taken", ["port", "admin_port"])
async def test_serve_names_a_port_that_is_taken_and_leaves_nothing_running(
    tmp_path: Path, taken: str
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        config = dataclasses.replace(gateway_config(tmp_path / "t.db"), **{taken: busy})
        with pytest.raises(CannotServe) as caught:
            async with serve(config):
                pytest.fail("started on a port that is taken")
    flag = "--port" if taken == "port" else "--admin-port"
    assert str(busy) in caught.value.reason and flag in caught.value.reason
    async with serve(gateway_config(tmp_path / "t.db")):  # the database was closed: reopens
        pass
