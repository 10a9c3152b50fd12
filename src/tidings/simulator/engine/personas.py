"""Personas of simulated devices: who they are, when they sleep, what they do and like.

A persona sets a device's profile attributes, time zone, quiet hours, behaviour events and a
reaction model: the chance to click a banner rises with the message's relevance to the persona
(its ``data.topic`` among the persona's interests), so targeted content measurably beats generic
content. Assignment is deterministic from (seed, device index).

On top of its persona each device has a :class:`DevicePlan`, also derived from (seed, index):
its own age and first name (some devices have none), how many sports articles it read (fans
one to five, others none to three, so a "three in a week" tag rule has users on both sides of
the line) and what it does with a shopping cart during a triggered scenario (nothing, add and
leave, or add and buy).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["FIRST_NAMES", "PERSONAS", "Cart", "DevicePlan", "Persona", "assign",
           "click_probability", "plan"]  # fmt: skip

Cart = Literal["none", "abandon", "purchase"]
"""What a device does with a cart in the triggered scenario."""

FIRST_NAMES = ("Li", "Wei", "Anna", "Tom", "Mia", "Sam", "Zoë", "Ravi", "Chloé", "Kenji")
"""First names devices may report (one in four reports none)."""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class DevicePlan:
    """One device's persona plus what makes it an individual."""

    index: int
    persona: Persona
    attrs: Mapping[str, object]  # what the device reports with identify()
    events: tuple[tuple[str, Mapping[str, object]], ...]  # tracked once connected
    cart: Cart

    @property
    def user(self) -> str:
        """The device's user id (device ``d{i}`` belongs to user ``u{i}``)."""
        return f"u{self.index}"


def plan(seed: int, index: int) -> DevicePlan:
    """The plan of device ``index`` in a run seeded with ``seed`` (stable across runs)."""
    persona = assign(seed, index)
    digest = hashlib.blake2b(f"{seed}:{index}:plan".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    attrs: dict[str, object] = {**persona.attrs, "persona": persona.name}
    base = persona.attrs.get("age")
    attrs["age"] = max(13, (base if isinstance(base, int) else 30) + rng.randint(-14, 10))
    if rng.random() < 0.75:
        attrs["first_name"] = rng.choice(FIRST_NAMES)
    sports = rng.randint(1, 5) if persona.name == "sports_fan" else rng.choice((0, 0, 1, 2, 3))
    others = tuple(e for e in persona.events if e != ("view_content", {"category": "sports"}))
    events = others + (("view_content", {"category": "sports"}),) * sports
    roll = rng.random()
    cart: Cart = "none" if roll < 0.4 else "abandon" if roll < 0.75 else "purchase"
    return DevicePlan(index=index, persona=persona, attrs=attrs, events=events, cart=cart)
