"""The TUI engine's pure parts: device identity and quiet hours from the seed, admin API errors,
and the helpers the screens build requests and tables with. No processes, no event loop."""

from __future__ import annotations

import json

import pytest

from tidings.admin_client import AdminError
from tidings.client_sdk.ui import inbox_line
from tidings.simulator.engine.fleet import Fleet, FleetConfig
from tidings.simulator.engine.personas import assign
from tidings.simulator.engine.sim import SimEngine
from tidings.simulator.screens.composer import build_campaign, field_target, slug
from tidings.simulator.screens.device import inbox_item
from tidings.simulator.screens.devices import matches
from tidings.simulator.widgets import funnel_days_text, funnel_text
from tidings.simulator.widgets.clock import clock_text, speed_label
from tidings.simulator.widgets.distribution import distribution_text

NOW = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def _engine(**cfg: object) -> SimEngine:
    engine = SimEngine.__new__(SimEngine)  # no gateway: only the fleet config is read
    engine.devices = 50
    engine.fleet = Fleet(FleetConfig(url="ws://127.0.0.1:9", devices=50, **cfg))  # type: ignore[arg-type]
    return engine


def _index_of(persona: str, seed: int = 0) -> int:
    return next(i for i in range(500) if assign(seed, i).name == persona)


@pytest.mark.parametrize(
    ("persona", "hours_after_midnight_utc", "quiet_now", "next_change_in_h"),
    [
        ("sports_fan", 0, False, 15),  # 08:00 in Shanghai; quiet from 23:00
        ("sports_fan", 15.5, True, 7.5),  # 23:30 in Shanghai; quiet until 07:00
        ("dormant_user", 0, True, 8),  # midnight in London; quiet until 08:00
        ("night_owl", 9, True, 5),  # 10:00 in Berlin; sleeps 09:00-15:00
        ("night_owl", 14, False, 18),  # 15:00 in Berlin: the window has just closed
    ],
)
def test_device_info_derives_quiet_hours_from_the_persona_and_the_device_clock(
    persona: str, hours_after_midnight_utc: float, quiet_now: bool, next_change_in_h: float
) -> None:
    index = _index_of(persona)
    info = _engine().device_info(index, NOW + hours_after_midnight_utc * 3600)
    assert (info.device, info.user, info.persona) == (f"d{index}", f"u{index}", persona)
    assert info.quiet == assign(0, index).quiet
    assert info.quiet_now is quiet_now
    assert info.next_change_in == next_change_in_h * 3600


def test_device_info_follows_the_fleet_seed_override_and_plain_devices() -> None:
    engine = _engine(seed=7, quiet_override=("00:00", "23:59"))
    info = engine.device_info(3, NOW + 3600)
    assert info.persona == assign(7, 3).name and info.quiet == ("00:00", "23:59")
    assert info.quiet_now

    plain = _engine(personas=False).device_info(3, NOW)
    assert (plain.persona, plain.tz, plain.quiet, plain.quiet_now) == ("-", "UTC", None, False)
    assert plain.next_change_in is None and plain.local_time == "00:00"
    assert _engine(personas=False).device_rows()[3] == ("d3", "u3", "-", "UTC")


def test_device_rows_name_every_device_with_its_persona_and_zone() -> None:
    rows = _engine().device_rows()
    assert len(rows) == 50
    assert rows[5] == ("d5", "u5", assign(0, 5).name, assign(0, 5).tz)


def test_admin_errors_keep_the_field_and_line_up_the_caret_without_the_field_prefix() -> None:
    message = "text: attr.age >\n                ^ expected a value after '>'"  # as the gateway
    body = {"error": {"code": "invalid_field", "field": "text", "message": message}}
    err = AdminError.from_answer(422, json.dumps(body).encode())
    assert (err.status, err.code, err.field, err.temporary) == (422, "invalid_field", "text", False)
    assert err.detail == "attr.age >\n          ^ expected a value after '>'"
    assert not err.missing_endpoint


def test_admin_errors_tell_a_missing_endpoint_from_a_missing_campaign() -> None:
    def error(message: str) -> bytes:
        return json.dumps({"error": {"code": "not_found", "message": message}}).encode()

    assert AdminError.from_answer(
        404, error("no such endpoint: GET '/v1/campaigns'")
    ).missing_endpoint
    assert not AdminError.from_answer(
        404, error("id: no campaign 'x' in app 'demo'")
    ).missing_endpoint
    odd = AdminError.from_answer(502, b"<html>bad gateway</html>")
    assert odd.code == "http_error" and odd.temporary and "502" in odd.reason
    assert AdminError(0, "unreachable", "no answer").temporary


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Spring sale", "spring-sale"), ("  Match day! ", "match-day"), ("Ünïcode", "n-code"),
     ("!!!", ""), ("x" * 60, "x" * 48)],
)  # fmt: skip
def test_campaign_ids_are_slugs_of_their_names(name: str, expected: str) -> None:
    assert slug(name) == expected


@pytest.mark.parametrize(
    ("field", "target"),
    [("id", "name"), ("name", "name"), ("segment", "segment"), ("text", "segment"),
     ("segment.all[0].value", "segment"), ("content.title", "title"), ("content.body", "body"),
     ("content.kind", "kind"), ("content.actions[0].url", "form"), ("variants", "variant-b"),
     ("variants[1].content.title", "variant-b"), ("title", "title"), ("status", "form"),
     (None, "form")],
)  # fmt: skip
def test_api_errors_land_next_to_the_field_they_name(field: str | None, target: str) -> None:
    assert field_target(field) == target


def test_a_campaign_is_built_from_the_form_with_optional_variants() -> None:
    plain = build_campaign(name="Hello", segment="  ", title="Hi", body="there", kind="inbox")
    assert plain == {"id": "hello", "app": "demo", "name": "Hello", "kind": "one_off",
                     "segment": "everyone", "content": {"kind": "inbox", "title": "Hi",
                     "body": "there", "category": "marketing"}}  # fmt: skip
    ab = build_campaign(name="AB", segment="tag:vip", title="A", body="", kind="both",
                        variant_b=" B ")  # fmt: skip
    assert ab["variants"] == [{"name": "a", "weight": 50},
                              {"name": "b", "weight": 50, "content": {"title": "B"}}]  # fmt: skip


def test_the_device_search_matches_ids_users_and_personas_exact_ids_first() -> None:
    rows = [(f"d{i}", f"u{i}", p, "UTC") for i, p in enumerate(["night_owl", "sports_fan"] * 6)]
    assert matches(rows, "d1")[:3] == [1, 10, 11]
    assert matches(rows, "u11") == [11]
    assert matches(rows, " SPORTS ") == [1, 3, 5, 7, 9, 11]
    assert matches(rows, "") == list(range(12))
    assert matches(rows, "utc") == []  # zones are not searched


def test_funnel_and_inbox_text_render_what_the_gateway_and_the_sdk_hold() -> None:
    total = {"targeted": 10, "sent": 5, "displayed": 4, "clicked": 1, "ctr": 0.25}
    stats = {"total": total, "variants": {"default": {"targeted": 10}}, "comparisons": [],
             "winner": None}  # fmt: skip
    lines = funnel_text(stats).plain.splitlines()
    assert lines[0] == "targeted        10  " + "█" * 40
    assert lines[1] == "sent             5  " + "█" * 20
    assert "CTR          25.0%" in lines and "variant" not in funnel_text(stats).plain  # one arm
    assert lines[-1] == "winner: none yet (not significant)"

    items = [{"title": "New", "body": "b", "read": False, "held": True},
             {"title": "Old", "body": "a", "read": True, "category": "transactional"}]  # fmt: skip
    assert [inbox_line(inbox_item(i)).plain for i in items] == [
        "● New  b  [marketing]  held until quiet hours end",
        "  Old  a  [transactional]",
    ]


def test_the_clock_line_shows_the_simulated_date_the_day_and_the_speed() -> None:
    start = NOW  # 2026-01-01 00:00 UTC, a Thursday
    assert clock_text(NOW + 2 * 86_400 + 3_723, 60.0, False, start).plain == (
        "▶ 60× · Sat 2026-01-03 01:02:03 UTC · day 3"
    )
    assert clock_text(NOW, 3600.0, True, start).plain == (
        "⏸ paused · Thu 2026-01-01 00:00:00 UTC · day 1"
    )
    assert clock_text(None, 1.0, False).plain == "simulated time: waiting for the gateway"
    assert [speed_label(s) for s in (1.0, 60.0, 3600.0, 0.5)] == ["1×", "60×", "3,600×", "0.5×"]


def test_the_distribution_chart_stacks_each_days_shares_to_the_full_width() -> None:
    names = ("new", "active", "dormant", "churned")
    days = [("Jan 01", {"new": 10, "active": 0, "dormant": 0, "churned": 0}),
            ("Jan 02", {"new": 1, "active": 6, "dormant": 2, "churned": 1})]  # fmt: skip
    lines = distribution_text(days, names, width=20).plain.splitlines()
    assert lines[0] == "■ new  ■ active  ■ dormant  ■ churned"
    assert lines[1] == "Jan 01 " + "█" * 20 + "  10 · 0 · 0 · 0"
    assert lines[2] == "Jan 02 " + "█" * 20 + "  1 · 6 · 2 · 1"
    text = distribution_text(days, names, width=20)
    # Segment widths follow the shares: 2 + 12 + 4 + 2 cells on the second day.
    row = text.plain.index("Jan 02 ") + len("Jan 02 ")
    widths = [sum(1 for span in text.spans if span.start >= row and span.style == colour
                  for _ in range(span.end - span.start))
              for colour in ("green", "cyan", "yellow", "red")]  # fmt: skip
    assert widths == [2, 12, 4, 2]
    assert distribution_text([], names).plain.endswith("(no sample yet)")
    empty = distribution_text([("Jan 03", {})], names, width=8).plain.splitlines()[1]
    assert empty == "Jan 03 " + " " * 8 + "  0 · 0 · 0 · 0"


def test_the_funnel_by_day_shows_what_each_simulated_day_added() -> None:
    days = [{"day": "2026-01-01", "sent": 100, "delivered": 90, "displayed": 80, "clicked": 8},
            {"day": "2026-01-02", "sent": 50, "delivered": 50, "displayed": 40, "clicked": 10,
             "converted": 2},
            {"day": "2026-01-04", "clicked": 1}]  # fmt: skip
    lines = funnel_days_text(days).plain.splitlines()
    assert lines[0].split() == ["day", "sent", "delivered", "displayed", "clicked", "converted",
                                "CTR"]  # fmt: skip
    assert lines[1].split() == ["Jan", "01", "100", "90", "80", "8", "0", "10.0%"]
    assert lines[2].split() == ["Jan", "02", "50", "50", "40", "10", "2", "25.0%"]
    assert lines[3].split() == ["Jan", "04", "0", "0", "0", "1", "0", "–"]
    assert funnel_days_text([]).plain.endswith("(nothing sent yet)")
