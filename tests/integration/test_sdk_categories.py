"""Consent per category from the SDK, over the real gateway: the app's categories only."""

from __future__ import annotations

from typing import Any

from helpers import APP_A

from tidings.client_sdk import RequestRefused
from tidings.server.node import Node


def consent_of(node: Node, user: str) -> dict[str, bool] | None:
    p = node.engine.audience.profile(APP_A.id, user)
    return None if p is None else dict(p.consent)


async def test_the_sdk_opts_out_of_a_declared_category_and_hears_about_an_unknown_one(
    gateway: Node, devices: Any
) -> None:
    await gateway.engine.set_settings(APP_A.id, {"categories": ["news", "promotions"]})
    phone = await devices("phone", user="reader")
    refused: list[Exception] = []
    phone.client.on_error(refused.append)
    await phone.client.set_preferences(categories={"news": False}, marketing=True)
    await phone.until(lambda: consent_of(gateway, "reader") == {"news": False, "marketing": True})
    await phone.client.set_preferences(categories={"reminders": False})
    await phone.until(lambda: bool(refused))
    (error,) = refused
    assert isinstance(error, RequestRefused) and error.code == "invalid_field"
    assert "prefs.categories.reminders: unknown category 'reminders'" in error.reason
    assert "marketing, transactional, news, promotions" in error.reason
    assert consent_of(gateway, "reader") == {"news": False, "marketing": True}
