"""A small client of the admin HTTP API, for the command line, the simulator and the load test.

Standard library only (it works with the core install), blocking (call it from a thread where
an event loop runs). Every failure is one :class:`AdminError`: the API's own error (status,
code, message, field, details) or a gateway that could not be reached (status 0), with a
message that says what to do::

    admin = AdminClient("http://127.0.0.1:8766", "dev-admin-key")
    sent = admin.call("POST", "/v1/messages", {"app": "demo", ...})
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from tidings.protocol.errors import TidingsError

__all__ = ["DEFAULT_TIMEOUT_S", "AdminClient", "AdminError", "quote"]

DEFAULT_TIMEOUT_S = 30.0
"""Seconds a request may take (a send answers once it is stored durably)."""


class AdminError(TidingsError):
    """The admin API refused a request, or could not be reached.

    Attributes:
        status: HTTP status, 0 when the gateway did not answer at all.
        code: The API's error code (``invalid_field``, ``not_found``...), ``unreachable`` or
            ``timeout`` without an answer, ``http_error`` for an answer not in the API's shape.
        field: The request field the error names (``"text"``, ``"content.title"``), if any.
        details: Every problem's message when the API found more than one.
    """

    def __init__(
        self,
        status: int,
        code: str,
        reason: str,
        field: str | None = None,
        details: tuple[str, ...] = (),
    ) -> None:
        super().__init__(reason, code=code, temporary=status == 0 or status >= 500)
        self.status = status
        self.field = field
        self.details = details

    @classmethod
    def from_answer(cls, status: int, raw: bytes) -> AdminError:
        """The error an HTTP answer carries (the API's documented shape, or its status)."""
        try:
            err = json.loads(raw)["error"]
            details = tuple(str(d["message"]) for d in err.get("details") or [])
            return cls(status, str(err.get("code", "error")), str(err["message"]),
                       err.get("field"), details)  # fmt: skip
        except (ValueError, KeyError, TypeError):
            text = raw.decode(errors="replace").strip()[:200]
            return cls(status, "http_error", f"HTTP {status}: {text or 'no body'}")

    @property
    def missing_endpoint(self) -> bool:
        """True when this gateway has no such endpoint (an older server)."""
        return self.status in (404, 405) and self.reason.startswith("no such endpoint")

    @property
    def detail(self) -> str:
        """The message without its leading ``"<field>: "``; a caret line under it (indented
        as far as that prefix by the gateway) loses as much, so it still lines up."""
        prefix = f"{self.field}: "
        if self.field and self.reason.startswith(prefix):
            first, *rest = self.reason[len(prefix) :].split("\n")
            pad = " " * len(prefix)
            return "\n".join([first, *(r.removeprefix(pad) for r in rest)])
        return self.reason


class AdminClient:
    """Requests to one gateway's admin API with one app's admin key.

    Args:
        base_url: ``http://host:port`` of the admin API.
        key: The app's admin key (sent as ``Authorization: Bearer``).
        timeout: Seconds each request may take.
    """

    def __init__(self, base_url: str, key: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
    ) -> Any:
        """One request; its JSON answer (None for an empty one).

        Raises:
            AdminError: the API refused it, or did not answer.
        """
        raw = self.raw(method, path, body, query=query)
        return json.loads(raw) if raw else None

    def raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
    ) -> bytes:
        """One request; the answer's bytes as sent (``/metrics`` text, JSON to print as is).

        ``body`` (if not None) is sent as JSON; ``query`` entries that are None are left out.

        Raises:
            AdminError: the API refused it, or did not answer.
        """
        url = f"{self.base_url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Authorization": f"Bearer {self.key}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer: bytes = response.read()
                return answer
        except urllib.error.HTTPError as exc:
            raise AdminError.from_answer(exc.code, exc.read()) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError):
                raise AdminError(0, "unreachable", f"cannot reach the admin API at "
                                 f"{self.base_url} (connection refused); start a gateway with "
                                 "`tidings gateway` or pass --admin-url") from None  # fmt: skip
            raise AdminError(0, "unreachable", f"cannot reach the admin API at {self.base_url}:"
                             f" {exc.reason}") from None  # fmt: skip
        except TimeoutError:
            raise AdminError(0, "timeout", f"the admin API at {self.base_url} did not answer "
                             f"within {self.timeout:.0f} s (the machine may be overloaded)"
                             ) from None  # fmt: skip
        except OSError as exc:
            raise AdminError(0, "unreachable", f"the admin API at {self.base_url} did not "
                             f"answer: {exc}") from None  # fmt: skip

    def metrics(self) -> dict[str, float]:
        """The gateway's Prometheus samples from ``/metrics``, by series (the name with its
        labels as written: ``tidings_events_total``, ``tidings_hello_seconds_bucket{le="1.0"}``).

        Raises:
            AdminError: the API did not answer.
        """
        out: dict[str, float] = {}
        for line in self.raw("GET", "/metrics").decode().splitlines():
            series, _, value = line.rpartition(" ")
            if series and not line.startswith("#"):
                try:
                    out[series] = float(value)
                except ValueError:
                    continue
        return out


def quote(part: str) -> str:
    """One path segment (an id) quoted for a URL."""
    return urllib.parse.quote(part, safe="")
