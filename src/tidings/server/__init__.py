"""The Tidings gateway: node (hub + broker + store), configuration, admin API, campaign engine."""

from __future__ import annotations

from tidings.server.config import AppConfig, GatewayConfig, load_config
from tidings.server.node import Node, SendRequest, SendResult
from tidings.server.policy import AppPolicy, ValueEvent

__all__ = [
    "AppConfig",
    "AppPolicy",
    "GatewayConfig",
    "Node",
    "SendRequest",
    "SendResult",
    "ValueEvent",
    "load_config",
]
