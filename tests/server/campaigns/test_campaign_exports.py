"""The campaigns package exports exactly its public API."""

from __future__ import annotations

import tidings.server.campaigns as campaigns
import tidings.server.targeting as targeting


def test_every_exported_name_exists_and_is_public() -> None:
    for package in (campaigns, targeting):
        assert package.__all__ == sorted(package.__all__, key=lambda n: (not n.isupper(), n))
        for name in package.__all__:
            assert hasattr(package, name), name
            assert not name.startswith("_")
