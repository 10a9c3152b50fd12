"""Every package's __all__ names exist and are importable."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "tidings",
    "tidings.protocol",
    "tidings.client_sdk",
    "tidings.client_sdk.ui",
    "tidings.server",
    "tidings.server.storage",
    "tidings.server.admin",
    "tidings.server.targeting",
    "tidings.server.campaigns",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_exports_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
