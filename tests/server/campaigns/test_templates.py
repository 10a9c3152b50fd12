"""Sandboxed templates: validation at creation, rendering, limits and injection attempts."""

from __future__ import annotations

import pytest

from tidings.server.campaigns.model import Action, Content
from tidings.server.campaigns.templates import (
    ContentLimits,
    TemplateError,
    event_context,
    render,
    render_content,
    user_context,
    validate,
    validate_content,
)
from tidings.server.config import AppConfig
from tidings.server.targeting.profiles import Profile

LI = Profile(app="shop", user_id="u42", attrs={"first_name": "Li", "region": "CN-SH"},
             locale="zh-CN", tags=frozenset({"vip"}))  # fmt: skip
USER = user_context(LI)
EVENT = event_context("add_to_cart", {"item": "running shoes", "price": 59}, 1_700_000_000)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {{ user.first_name | default('there') }}", "Hi Li"),
        ("Hi {{ user.nickname | default('there') }}", "Hi there"),
        ("{{ user.address.city | default('your city') }}", "your city"),
        (
            "{{ event.item | default('') | title }} for {{ event.price | default(0) }}",
            "Running Shoes for 59",
        ),
        ("{{ user.id }} {{ user.locale }} {{ user.tags | join(',') }}", "u42 zh-CN vip"),
        ("{% if user.region is defined %}{{ user.region | default('') }}{% endif %}", "CN-SH"),
        ("{% for t in user.tags %}#{{ t }}{% endfor %}", "#vip"),
        ("{% set n = user.first_name | default('x') %}{{ n | upper }}", "LI"),
        ("plain text", "plain text"),
    ],
)
def test_valid_templates_render(template: str, expected: str) -> None:
    validate(template)
    assert render(template, user=USER, event=EVENT) == expected


@pytest.mark.parametrize(
    ("template", "line", "column"),
    [
        ("Hi {{ user.first_name ", 1, 4),
        ("line one\nand {{ user.id }} then {{ user. }}", 2, 24),
        ("{% if user.id %}never closed", 1, 1),
        ("{{ user.id }}{% endfor %}", 1, 14),
    ],
)
def test_syntax_errors_carry_line_and_column(template: str, line: int, column: int) -> None:
    with pytest.raises(TemplateError) as info:
        validate(template, field="content.title")
    assert (info.value.line, info.value.column) == (line, column)
    assert info.value.field == "content.title"
    assert f"line {line}, column {column}" in str(info.value)


@pytest.mark.parametrize(
    ("template", "where"),
    [
        ("{{ user.id | attr('x') }}", "(line 1)"),
        ("line one\n{{ user.first_name }}", "(line 2)"),
    ],
)
def test_errors_found_after_parsing_name_the_line_without_a_column(
    template: str, where: str
) -> None:
    with pytest.raises(TemplateError) as info:
        validate(template, field="content.body")
    assert info.value.column is None
    assert str(info.value).endswith(where) and "column" not in str(info.value)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("Hi {{ user.first_name }}", "user.first_name may be missing"),
        ("{{ event.item }}", "event.item may be missing"),
        ("{{ user['first_name'] }}", "user.first_name may be missing"),
        ("{{ (user.a ~ 'x') | default('y') }}", "user.a may be missing"),
        ("{{ name }}", "unknown variable 'name'"),
        ("{{ foo | default('x') }}", "unknown variable 'foo'"),
    ],
)
def test_missing_variables_without_default_are_rejected(template: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem):
        validate(template)


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ | default('x') }}",
        "{{ user.__class__ }}",
        "{{ user['__class__'] | default('') }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ config }}",
        "{{ self }}",
        "{{ self._TemplateReference__context }}",
        "{{ range(10) }}",
        "{{ namespace() }}",
        "{% import os %}",
        "{% import 'os' as os %}",
        "{% include 'secrets.txt' %}",
        "{% extends 'base.html' %}",
        "{% macro m() %}{% endmacro %}",
        "{{ user.id.upper() }}",
        "{{ user | attr('__class__') }}",
        "{{ user.tags | map(attribute='__class__') | list }}",
        "{{ '{0.__class__}' | format(user) }}",
        "{{ 'x' * 100000000 }}",
        "{{ 9 ** 999999 }}",
        "{% for i in user.tags %}{{ loop.__class__ }}{% endfor %}",
        "{{ user.tags.__len__ }}",
        "x" * 5000,
    ],
)
def test_injection_attempts_are_rejected(attack: str) -> None:
    with pytest.raises(TemplateError):
        validate(attack)


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ 'x' * 100000000 }}",
        "{{ 9 ** 99999 }}",
        "{{ config }}",
        "{{ user.first_name }}",
    ],
)
def test_rendering_is_sandboxed_even_without_validation(attack: str) -> None:
    with pytest.raises(TemplateError):
        render(attack, user={"id": "u1"})


def test_runtime_errors_become_template_errors() -> None:
    validate("{{ user.age | default(0) + 1 }}")
    with pytest.raises(TemplateError, match="TypeError"):
        render("{{ user.age | default(0) + 1 }}", user={"age": "old"})


def test_rendered_length_limits_are_checked_at_creation() -> None:
    validate("{{ user.id }}", max_len=6)  # the sample id "user-1" fits
    with pytest.raises(TemplateError, match="more than the limit of 5"):
        validate("{{ user.id }}", max_len=5)
    banner = Content(title="T" * 31, body="ok")
    with pytest.raises(TemplateError) as info:
        validate_content(banner)
    assert info.value.field == "content.title"
    validate_content(Content(kind="inbox", title="T" * 31, body="B" * 500))
    validate_content(banner, limits=ContentLimits(banner_title_max=40))
    with pytest.raises(TemplateError) as info:
        validate_content(Content(body="x", data={"sku": "{{ event.sku }}"}))
    assert info.value.field == "content.data.sku"


def test_render_content_renders_every_field_and_enforces_limits() -> None:
    content = Content(
        title="Hi {{ user.first_name | default('there') }}",
        body="{{ event.item | default('cart') }} waits",
        image_url="https://img/{{ user.region | default('x') }}.png",
        actions=(Action("open", "Open {{ event.item | default('') }}", "shop://{{ user.id }}"),),
        data={"price": "{{ event.price | default(0) }}"},
    )
    r = render_content(content, user=USER, event=EVENT)
    assert (r.title, r.body, r.image_url) == (
        "Hi Li",
        "running shoes waits",
        "https://img/CN-SH.png",
    )
    assert r.actions == (Action("open", "Open running shoes", "shop://u42"),)
    assert dict(r.data) == {"price": "59"}
    long_user = user_context(Profile(app="shop", user_id="u", attrs={"first_name": "N" * 40}))
    with pytest.raises(TemplateError, match="title"):
        render_content(content, user=long_user, event=EVENT)
    cut = render_content(content, user=long_user, event=EVENT, truncate=True)
    assert len(cut.title) == 30 and cut.title.endswith("…")


def test_a_campaign_is_checked_with_all_its_variants() -> None:
    from tidings.server.campaigns.model import Campaign
    from tidings.server.campaigns.templates import validate_campaign

    data = {
        "id": "c",
        "app": "shop",
        "name": "C",
        "kind": "one_off",
        "content": {"title": "Hi {{ user.first_name | default('there') }}", "body": "Sale"},
        "variants": [{"name": "a"}, {"name": "b", "content": {"body": "{{ user.city }}"}}],
    }
    with pytest.raises(TemplateError) as info:
        validate_campaign(Campaign.from_json(data))
    assert info.value.field == "variants[1].content.body"
    data["variants"] = [{"name": "a"}]
    validate_campaign(Campaign.from_json(data))


def test_kind_both_must_fit_as_a_banner_and_in_the_inbox() -> None:
    app = AppConfig(id="tight", secret="s" * 8, admin_key="k" * 8, banner_title_max=30,
                    banner_body_max=50, inbox_title_max=20, inbox_body_max=40)  # fmt: skip
    limits = ContentLimits.of(app)
    assert limits.for_kind("banner") == (30, 50)
    assert limits.for_kind("inbox") == (20, 40)
    assert limits.for_kind("both") == (20, 40)  # the stricter of each, for campaigns and sends
