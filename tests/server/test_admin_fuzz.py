"""Schema-shaped fuzzing of the admin API: whatever arrives, the answer is never a 5xx."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tidings.server.admin import AdminServer
from tidings.server.config import AppConfig, GatewayConfig
from tidings.server.node import Node

TIMEOUT_SCALE = float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
KEY = "fuzz-admin-key-123"
EXAMPLES = int(os.environ.get("TIDINGS_FUZZ_EXAMPLES", "150"))


class _Stack:
    """A node and its admin server on their own loop in a thread, for synchronous tests."""

    def __init__(self, db: Path) -> None:
        self.config = GatewayConfig(
            port=0,
            admin_port=0,
            db=str(db),
            apps=(
                AppConfig(id="demo", secret="fuzz-secret-123", admin_key=KEY),
                AppConfig(id="other", secret="other-secret-123", admin_key="other-admin-key1"),
            ),
        )
        self.url = ""
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="admin-fuzz", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with Node(self.config) as node, AdminServer(node, "127.0.0.1", 0) as server:
            self.url = server.url
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> _Stack:
        self._thread.start()
        if not self._ready.wait(30 * TIMEOUT_SCALE) or self.error or not self.url:
            raise RuntimeError(f"admin stack did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30 * TIMEOUT_SCALE)
        if self.error:
            raise self.error


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with (
        _Stack(tmp_path_factory.mktemp("fuzz") / "tidings.db") as stack,
        httpx.Client(base_url=stack.url, trust_env=False, timeout=10 * TIMEOUT_SCALE) as http,
    ):
        yield http


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
"""Any JSON value, including NaN, infinities and integers beyond 2**53."""


_text = st.text(st.characters(min_codepoint=32), min_size=1, max_size=12)
_ids = st.lists(_text, min_size=1, max_size=3)

plausible_bodies = st.fixed_dictionaries(
    {
        "app": st.sampled_from(["demo", "other", "nope"]),
        "to": st.one_of(
            st.fixed_dictionaries({"users": _ids}), st.fixed_dictionaries({"devices": _ids})
        ),
        "title": st.text(st.characters(min_codepoint=32), min_size=1, max_size=35),
        "body": st.text(st.characters(min_codepoint=9), min_size=1, max_size=60),
    },
    optional={
        "kind": st.sampled_from(["banner", "inbox", "both"]),
        "category": st.sampled_from(["marketing", "transactional"]),
        "priority": st.sampled_from(["normal", "urgent"]),
        "ttl": st.integers(min_value=-10, max_value=40 * 24 * 3600),
        "collapse_key": _text,
        "image": st.sampled_from(["https://x.test/a.png", "http://", "ftp://x"]),
        "actions": st.lists(
            st.fixed_dictionaries(
                {"id": _text, "label": _text}, optional={"url": st.text(max_size=10)}
            ),
            max_size=6,
        ),
        "data": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
        "expire_after_read": st.booleans(),
    },
)
"""Bodies shaped like the schema with plausible values (many pass and reach the node)."""

_KEYS = ["app", "to", "title", "body", "kind", "category", "priority", "ttl", "collapse_key"]
_KEYS += ["image", "actions", "data", "expire_after_read", "extra"]

send_bodies = st.one_of(
    plausible_bodies,
    st.tuples(plausible_bodies, st.sampled_from(_KEYS), json_values).map(
        lambda t: {**t[0], t[1]: t[2]}
    ),
    json_values,
)
"""Plausible bodies, plausible bodies with one field replaced by any JSON value, any JSON."""


def _check(response: httpx.Response) -> None:
    event(f"HTTP {response.status_code}")  # see: pytest --hypothesis-show-statistics
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] and error["message"]


_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_SETTINGS
@given(body=send_bodies)
def test_send_never_answers_5xx(client: httpx.Client, body: dict[str, Any]) -> None:
    raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    _check(client.post("/v1/messages", content=raw, headers=headers))


@_SETTINGS
@given(raw=st.binary(max_size=300), content_type=st.sampled_from(["application/json", "text/a"]))
def test_arbitrary_bytes_never_answer_5xx(
    client: httpx.Client, raw: bytes, content_type: str
) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": content_type}
    _check(client.post("/v1/messages", content=raw, headers=headers))


@_SETTINGS
@given(
    message_id=st.text(min_size=1, max_size=200).filter(lambda s: s not in (".", "..")),
    app=st.one_of(st.none(), st.text(max_size=80)),
)
def test_revoke_never_answers_5xx(client: httpx.Client, message_id: str, app: str | None) -> None:
    params = {} if app is None else {"app": app.encode("utf-8", "surrogatepass")}
    path = "/v1/messages/" + quote(message_id.encode("utf-8", "surrogatepass"), safe="")
    response = client.delete(path, params=params, headers={"Authorization": f"Bearer {KEY}"})
    _check(response)


plausible_campaigns = st.fixed_dictionaries(
    {
        "id": _text,
        "app": st.sampled_from(["demo", "other", "nope"]),
        "name": _text,
        "kind": st.sampled_from(["one_off", "scheduled", "triggered", "x"]),
        "content": st.fixed_dictionaries(
            {"kind": st.sampled_from(["banner", "inbox", "both"]), "title": _text,
             "body": _text},
            optional={"actions": json_values, "data": json_values, "ttl_s": json_values},
        ),
    },
    optional={
        "segment": st.one_of(st.text(max_size=40), json_values),
        "variants": json_values,
        "control_share": json_values,
        "trigger": json_values,
        "frequency": json_values,
        "schedule": json_values,
        "send_time": json_values,
        "conversion": json_values,
    },
)  # fmt: skip
"""Campaign JSON of the right outline with any values in the optional parts."""

_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/campaigns"): st.one_of(plausible_campaigns, json_values),
    ("PUT", "/v1/campaigns/{id}"): st.one_of(plausible_campaigns, json_values),
    ("PUT", "/v1/tag-rules/{id}?app=demo"): st.one_of(
        st.fixed_dictionaries(
            {"event": _text, "threshold": json_values, "window_s": json_values},
            optional={"where": json_values},
        ),
        json_values,
    ),
    ("PATCH", "/v1/users/{id}"): st.fixed_dictionaries(
        {"app": st.sampled_from(["demo", "other"])},
        optional={"attrs": json_values, "consent": json_values, "x": json_values},
    ),
    ("POST", "/v1/events"): st.fixed_dictionaries(
        {
            "app": st.sampled_from(["demo", "nope"]),
            "user": _text,
            "events": st.lists(
                st.dictionaries(st.sampled_from(["id", "name", "props", "ts"]), json_values),
                max_size=3,
            ),
        },
    ),
}


@_SETTINGS
@given(route=st.sampled_from(sorted(_BODIES)), data=st.data(), ident=_text)
def test_campaign_and_user_writes_never_answer_5xx(
    client: httpx.Client, route: tuple[str, str], data: st.DataObject, ident: str
) -> None:
    method, path = route
    body = data.draw(_BODIES[route])
    raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    url = path.replace("{id}", quote(ident.encode("utf-8", "surrogatepass"), safe=""))
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    _check(client.request(method, url, content=raw, headers=headers))


_READS = [
    ("GET", "/v1/campaigns/{id}"), ("DELETE", "/v1/campaigns/{id}"),
    ("POST", "/v1/campaigns/{id}/start"), ("POST", "/v1/campaigns/{id}/pause"),
    ("POST", "/v1/campaigns/{id}/cancel"), ("GET", "/v1/campaigns/{id}/stats"),
    ("GET", "/v1/campaigns/{id}/decisions"), ("GET", "/v1/tag-rules/{id}"),
    ("DELETE", "/v1/tag-rules/{id}"), ("GET", "/v1/users/{id}"),
    ("GET", "/v1/users/{id}/export"), ("DELETE", "/v1/users/{id}"),
]  # fmt: skip


@_SETTINGS
@given(
    route=st.sampled_from(_READS),
    ident=st.text(min_size=1, max_size=200).filter(lambda s: s not in (".", "..")),
    params=st.dictionaries(st.sampled_from(["app", "user", "limit"]), st.text(max_size=20)),
)
def test_campaign_and_user_reads_never_answer_5xx(
    client: httpx.Client, route: tuple[str, str], ident: str, params: dict[str, str]
) -> None:
    method, path = route
    url = path.replace("{id}", quote(ident.encode("utf-8", "surrogatepass"), safe=""))
    query = {k: v.encode("utf-8", "surrogatepass") for k, v in params.items()}
    headers = {"Authorization": f"Bearer {KEY}"}
    _check(client.request(method, url, params=query, headers=headers))
