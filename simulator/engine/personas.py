"""Personas of simulated devices: who they are, when they sleep, what they do and like.

A persona sets a device's profile attributes, time zone, quiet hours, behaviour events and a
reaction model: the chance to click a banner rises with the message's relevance to the persona
(its ``data.topic`` among the persona's interests), so targeted content measurably beats generic
content. Assignment is deterministic from (seed, device index).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PERSONAS", "Persona", "assign", "click_probability"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Persona:
    """One kind of app user."""

    name: str
    attrs: dict[str, object]
    tz: str
    quiet: tuple[str, str] | None
    interests: frozenset[str]
    events: tuple[tuple[str, Mapping[str, object]], ...]
    base_click: float = 0.03  # generic content
    relevant_click: float = 0.30  # content about one of the interests


PERSONAS: tuple[Persona, ...] = (
    Persona(
        name="sports_fan", attrs={"age": 28, "gender": "m", "region": "CN-SH"},
        tz="Asia/Shanghai", quiet=("23:00", "07:00"), interests=frozenset({"sports"}),
        events=(("view_content", {"category": "sports"}),) * 3,
    ),
    Persona(
        name="bargain_hunter", attrs={"age": 35, "gender": "f", "region": "CN-BJ"},
        tz="Asia/Shanghai", quiet=("22:00", "08:00"), interests=frozenset({"sale", "coupon"}),
        events=(("view_content", {"category": "deals"}), ("add_to_cart", {"item": "kettle"})),
    ),
    Persona(
        name="mother_baby", attrs={"age": 31, "gender": "f", "region": "CN-GZ", "has_baby": True},
        tz="Asia/Shanghai", quiet=("21:30", "07:30"), interests=frozenset({"baby"}),
        events=(("view_content", {"category": "baby"}), ("purchase", {"amount": 199})),
    ),
    Persona(
        name="new_user", attrs={"age": 22, "region": "US-NY"},
        tz="America/New_York", quiet=("22:00", "08:00"), interests=frozenset({"welcome"}),
        events=(("app_open", {}),),
    ),
    Persona(
        name="night_owl", attrs={"age": 26, "region": "DE-BE"},
        tz="Europe/Berlin", quiet=("09:00", "15:00"), interests=frozenset({"gaming"}),
        events=(("view_content", {"category": "gaming"}),),
    ),
    Persona(
        name="dormant_user", attrs={"age": 45, "region": "GB-LND"},
        tz="Europe/London", quiet=("22:00", "08:00"), interests=frozenset(),
        events=(), base_click=0.005, relevant_click=0.02,
    ),
)  # fmt: skip


def assign(seed: int, index: int) -> Persona:
    """The persona of device ``index`` in a run seeded with ``seed`` (stable across runs)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return PERSONAS[int.from_bytes(digest, "big") % len(PERSONAS)]


def click_probability(persona: Persona, topic: object) -> float:
    """Chance that this persona clicks a banner about ``topic``."""
    return persona.relevant_click if topic in persona.interests else persona.base_click
