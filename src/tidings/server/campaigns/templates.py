"""Personalised content: sandboxed Jinja2 templates over the profile and the triggering event.

Templates see exactly two variables, ``user`` (the profile's attributes plus the built-ins in
:data:`USER_BUILTINS`) and ``event`` (the triggering event's properties plus ``name`` and
``ts``)::

    Hi {{ user.first_name | default("there") }}, your {{ event.item | default("cart") }} waits

Every template is checked when the campaign is created (:func:`validate`,
:func:`validate_content`), so that nothing fails at 3 a.m.:

- syntax errors are reported with line and column;
- a variable other than ``user``/``event`` (``config``, ``self``, ``cycler``, ``lipsum``,
  ``range``...) is rejected, as are calls, imports, includes, macros, attributes starting with
  ``_`` and filters outside :data:`ALLOWED_FILTERS`;
- an attribute that is not guaranteed to exist (anything but the built-ins) must go through
  ``| default(...)`` (or ``is defined``), because a user without it would otherwise break the
  send;
- the template is rendered with a sample context and the rendered length is checked against
  the limits (banner title <= 30 and body <= 50 characters by default).

Rendering runs in Jinja2's immutable sandbox with no globals; whatever slips past the checks
still cannot reach Python internals (the sandbox refuses ``__class__`` and friends) and cannot
allocate without bound (``**`` is refused, ``*`` on strings and lists is size-limited). Every
failure surfaces as :class:`TemplateError`. Compiled templates are cached by their text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import jinja2
import regex
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tidings.protocol import codes, kinds
from tidings.protocol.errors import TidingsError
from tidings.server.campaigns.model import Action, Campaign, Content, Overflow
from tidings.server.config import AppConfig
from tidings.server.targeting.profiles import Profile

__all__ = [
    "ALLOWED_FILTERS",
    "DEFAULT_LIMITS",
    "DEFAULT_ROOTS",
    "ELLIPSIS",
    "EVENT_BUILTINS",
    "MAX_RENDERED_LEN",
    "MAX_TEMPLATE_LEN",
    "USER_BUILTINS",
    "ContentLimits",
    "Rendered",
    "TemplateError",
    "copy_length",
    "event_context",
    "render",
    "render_content",
    "sample_context",
    "truncate_copy",
    "user_context",
    "validate",
    "validate_campaign",
    "validate_content",
]

MAX_TEMPLATE_LEN = 4_096
"""Security limit: longest template source, in characters."""

MAX_RENDERED_LEN = 10_000
"""Security limit: largest string or list a template may build with ``*``."""

ELLIPSIS = "…"
"""What ends copy cut to fit (``content.overflow: truncate``); one character."""

_CLUSTER = regex.compile(r"\X")  # one extended grapheme cluster (UAX #29)

DEFAULT_ROOTS = frozenset({"user", "event"})

USER_BUILTINS = frozenset(
    {"id", "locale", "tz", "platform", "app_version", "tier", "lifecycle", "tags"}
)
"""``user`` keys every profile has; other attributes need ``| default``."""

EVENT_BUILTINS = frozenset({"name", "ts"})
"""``event`` keys every event has; other properties need ``| default``."""

_GUARANTEED = {"user": USER_BUILTINS, "event": EVENT_BUILTINS}

ALLOWED_FILTERS = frozenset(
    {
        "abs", "capitalize", "center", "d", "default", "first", "float", "int", "join",
        "last", "length", "lower", "replace", "round", "string", "title", "trim", "truncate",
        "upper", "wordcount",
    }
)  # fmt: skip
"""Filters a template may use; the rest (``attr``, ``map``, ``format``...) are refused."""

_DEFAULTING = frozenset({"default", "d"})
_DEFINED_TESTS = frozenset({"defined", "undefined", "none"})
_FORBIDDEN = (
    nodes.Import,
    nodes.FromImport,
    nodes.Include,
    nodes.Extends,
    nodes.Macro,
    nodes.CallBlock,
    nodes.Call,
    nodes.Block,
)


class TemplateError(TidingsError):
    """A template that does not compile, is unsafe, or does not render within the limits.

    Attributes:
        field: Which content field (``content.title``, ``variants[1].content.body``...).
        line: 1-based line of a syntax error, else None.
        column: 1-based column of a syntax error, else None (the message then names the line
            alone).
    """

    code = codes.ERR_INVALID_FIELD

    def __init__(
        self, field: str, problem: str, *, line: int | None = None, column: int | None = None
    ):
        where = ""
        if line is not None:
            where = f" (line {line})" if column is None else f" (line {line}, column {column})"
        super().__init__(f"{field}: {problem}{where}")
        self.field = field
        self.problem = problem
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentLimits:
    """Rendered length limits in characters (seeds: APP push copy <= 50 characters)."""

    banner_title_max: int = 30
    banner_body_max: int = 50
    inbox_title_max: int = 120
    inbox_body_max: int = 2_000

    @classmethod
    def of(cls, app: AppConfig) -> ContentLimits:
        """The limits an app configures."""
        return cls(
            banner_title_max=app.banner_title_max, banner_body_max=app.banner_body_max,
            inbox_title_max=app.inbox_title_max, inbox_body_max=app.inbox_body_max,
        )  # fmt: skip

    def for_kind(self, kind: str) -> tuple[int, int]:
        """Return ``(title_max, body_max)``: an overlay (banner, modal) has the banner limits,
        the inbox its own, and ``both`` must fit both.

        The one rule for direct sends (admin API) and campaigns alike.
        """
        return kinds.rules(kind).limits(
            (self.banner_title_max, self.banner_body_max),
            (self.inbox_title_max, self.inbox_body_max),
        )


DEFAULT_LIMITS = ContentLimits()


class _Undefined(jinja2.ChainableUndefined, jinja2.StrictUndefined):
    """Chains through ``a.b.c`` so ``| default`` can catch it; fails when actually used."""


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            raise jinja2.exceptions.SecurityError("the power operator is not allowed")
        for seq, n in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(n, int)
            if sized and len(seq) * n > MAX_RENDERED_LEN:
                raise jinja2.exceptions.SecurityError("repetition result too large")
        return super().call_binop(context, operator, left, right)


_ENV = _Environment(undefined=_Undefined, autoescape=False, cache_size=0)
_ENV.globals.clear()


# --- checking ---------------------------------------------------------------------------------


def _syntax_column(text: str, line: int) -> int:
    """Best-effort column of a syntax error: the first construct on the line that fails alone."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return 1
    src = lines[line - 1]
    starts = [i for i in range(len(src) - 1) if src[i : i + 2] in ("{{", "{%", "{#")]
    for i in starts:
        closer = {"{{": "}}", "{%": "%}", "{#": "#}"}[src[i : i + 2]]
        end = src.find(closer, i + 2)
        piece = src[i:] if end < 0 else src[i : end + 2]
        try:
            _ENV.parse(piece)
        except jinja2.TemplateSyntaxError as e:
            if end < 0 or "end of template" not in (e.message or "") or piece.startswith("{{"):
                return i + 1
    return starts[0] + 1 if starts else 1


def _chain(node: nodes.Node) -> tuple[nodes.Node, str | None]:
    """Return the root of an attribute/item chain and the first key under it (None: dynamic)."""
    first: str | None = None
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            first = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            first = node.arg.value
        else:
            first = None
        node = node.node
    return node, first


def _check_ast(tree: nodes.Template, roots: frozenset[str], field: str) -> None:
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}

    def fail(problem: str, node: nodes.Node) -> TemplateError:
        return TemplateError(field, problem, line=node.lineno, column=None)

    def visit(node: nodes.Node, defaulted: bool) -> None:
        if isinstance(node, _FORBIDDEN):
            kind = type(node).__name__.lower()
            raise fail(f"{kind} is not allowed in templates", node)
        if isinstance(node, nodes.Filter):
            if node.name not in ALLOWED_FILTERS:
                raise fail(f"filter {node.name!r} is not allowed", node)
            if node.node is not None:
                visit(node.node, node.name in _DEFAULTING)
            for arg in _args(node):
                visit(arg, False)
            return
        if isinstance(node, nodes.Test) and node.name in _DEFINED_TESTS:
            visit(node.node, True)
            for arg in _args(node):
                visit(arg, False)
            return
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise fail(f"attribute {node.attr!r} is not allowed", node)
        if isinstance(node, nodes.Getitem):
            arg = node.arg
            if isinstance(arg, nodes.Const) and str(arg.value).startswith("_"):
                raise fail(f"item {arg.value!r} is not allowed", node)
            visit(arg, False)
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            root, first = _chain(node)
            if isinstance(root, nodes.Name) and root.name in roots and root.name not in stored:
                ok = first is not None and first in _GUARANTEED.get(root.name, frozenset())
                if not ok and not defaulted:
                    shown = f"{root.name}.{first}" if first else f"{root.name}[...]"
                    raise fail(f"{shown} may be missing: add | default(...)", node)
            visit(node.node, defaulted)
            return
        known = roots | stored | {"loop"}
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in known:
            raise fail(f"unknown variable {node.name!r}", node)
        for child in node.iter_child_nodes():
            visit(child, False)

    visit(tree, False)


def _args(node: nodes.Filter | nodes.Test) -> Iterator[nodes.Node]:
    yield from node.args
    for kw in node.kwargs:
        yield kw.value
    if node.dyn_args is not None:
        yield node.dyn_args
    if node.dyn_kwargs is not None:
        yield node.dyn_kwargs


@lru_cache(maxsize=4_096)
def _compile(text: str) -> jinja2.Template:
    return _ENV.from_string(text)


def _parse(text: str, field: str) -> nodes.Template:
    if not isinstance(text, str):
        raise TemplateError(field, "must be a string")
    if len(text) > MAX_TEMPLATE_LEN:
        raise TemplateError(field, f"longer than {MAX_TEMPLATE_LEN} characters")
    try:
        return _ENV.parse(text)
    except jinja2.TemplateSyntaxError as e:
        line = e.lineno or 1
        raise TemplateError(
            field, e.message or "syntax error", line=line, column=_syntax_column(text, line)
        ) from None


def sample_context() -> dict[str, Any]:
    """Return the context :func:`validate` renders with when none is given."""
    user = {"id": "user-1", "locale": "en-US", "tz": "UTC", "platform": "ios",
            "app_version": "1.0", "tier": "basic", "lifecycle": "active", "tags": []}  # fmt: skip
    return {"user": user, "event": {"name": "sample", "ts": 0}}


def validate(
    text: str,
    *,
    allowed_roots: frozenset[str] = DEFAULT_ROOTS,
    sample: Mapping[str, Any] | None = None,
    max_len: int | None = None,
    field: str = "template",
) -> None:
    """Check one template at creation time; raise :class:`TemplateError` naming ``field``."""
    _check_ast(_parse(text, field), allowed_roots, field)
    ctx = sample if sample is not None else sample_context()
    out = _render(text, ctx, field)
    if max_len is not None and copy_length(out) > max_len:
        n = copy_length(out)
        raise TemplateError(field, f"renders to {n} characters, more than the limit of "
                            f"{max_len} (or set content.overflow to truncate)")  # fmt: skip


def validate_content(
    content: Content,
    *,
    limits: ContentLimits = DEFAULT_LIMITS,
    sample: Mapping[str, Any] | None = None,
    field: str = "content",
) -> None:
    """Check every template of ``content`` (title, body, image, actions, data)."""
    title_max, body_max = limits.for_kind(content.kind)
    cut = content.overflow is Overflow.TRUNCATE  # long copy is cut when it is sent
    validate(content.title, sample=sample, max_len=None if cut else title_max,
             field=f"{field}.title")  # fmt: skip
    validate(content.body, sample=sample, max_len=None if cut else body_max,
             field=f"{field}.body")  # fmt: skip
    if content.image_url is not None:
        validate(content.image_url, sample=sample, field=f"{field}.image_url")
    for i, a in enumerate(content.actions):
        validate(a.label, sample=sample, field=f"{field}.actions[{i}].label")
        validate(a.url, sample=sample, field=f"{field}.actions[{i}].url")
    for k, v in content.data.items():
        validate(v, sample=sample, field=f"{field}.data.{k}")


def validate_campaign(
    campaign: Campaign,
    *,
    limits: ContentLimits = DEFAULT_LIMITS,
    sample: Mapping[str, Any] | None = None,
) -> None:
    """Check the templates of a campaign's content and of every variant's content."""
    validate_content(campaign.content, limits=limits, sample=sample)
    for i, v in enumerate(campaign.variants):
        if v.overrides:
            validate_content(
                v.content, limits=limits, sample=sample, field=f"variants[{i}].content"
            )


# --- rendering --------------------------------------------------------------------------------


def user_context(profile: Profile) -> dict[str, Any]:
    """Return the ``user`` variable for ``profile``: its attributes plus the built-ins."""
    ctx = dict(profile.attrs)
    ctx.update(
        id=profile.user_id,
        locale=profile.locale,
        tz=profile.tz,
        platform=profile.platform,
        app_version=profile.app_version,
        tier=str(profile.tier),
        lifecycle=str(profile.lifecycle),
        tags=sorted(profile.tags),
    )
    return ctx


def event_context(name: str, props: Mapping[str, Any], ts: float) -> dict[str, Any]:
    """Return the ``event`` variable: the event's properties plus ``name`` and ``ts``."""
    ctx = dict(props)
    ctx.update(name=name, ts=ts)
    return ctx


def _render(text: str, ctx: Mapping[str, Any], field: str) -> str:
    try:
        return _compile(text).render(ctx)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(field, e.message or "syntax error", line=e.lineno) from None
    except jinja2.TemplateError as e:  # UndefinedError, SecurityError
        raise TemplateError(field, str(e) or type(e).__name__) from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as e:
        raise TemplateError(field, f"{type(e).__name__}: {e}") from None


def render(
    text: str,
    *,
    user: Mapping[str, Any],
    event: Mapping[str, Any] | None = None,
    field: str = "template",
) -> str:
    """Render one template for one user (``event`` defaults to an empty event)."""
    if "{" not in text:
        return text  # plain text: the common case of untemplated fields
    ctx = {"user": user, "event": event if event is not None else {"name": "", "ts": 0}}
    return _render(text, ctx, field)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """Content rendered for one user, ready to go on the wire."""

    title: str
    body: str
    image_url: str | None
    actions: tuple[Action, ...]
    data: Mapping[str, str]


TEMPLATE_MARKS = ("{{", "{%", "{#")
"""What starts template syntax in a text."""


def is_template(text: str) -> bool:
    """Whether ``text`` holds template syntax (rendered by campaigns, not by direct sends)."""
    return any(mark in text for mark in TEMPLATE_MARKS)


def copy_length(text: str) -> int:
    """Length of message copy in user-perceived characters: extended grapheme clusters.

    ``"中" * 49 + "👍🏽"`` is 50, a family emoji ``👨‍👩‍👧‍👦`` is 1, ``"e\u0301"`` (e + combining
    acute) is 1 — what a reader counts and what the app's limits mean (seeds: push copy of
    at most 50 characters). Clusters follow Unicode's UAX #29 as the ``regex`` module's ``\\X``
    implements it.
    """
    if text.isascii():  # the common case: one character each, but CR LF is one cluster
        return len(text) - text.count("\r\n")
    return len(_CLUSTER.findall(text))


def truncate_copy(text: str, max_len: int, ellipsis: str = ELLIPSIS) -> str:
    """Return ``text`` if it fits ``max_len`` clusters, else its start and ``ellipsis``.

    Never splits a cluster (an emoji with its skin tone, a letter with its accents), and the
    result, ellipsis included, is at most ``max_len`` clusters long.
    """
    if copy_length(text) <= max_len:
        return text
    keep = max(0, max_len - copy_length(ellipsis))
    return "".join(_CLUSTER.findall(text)[:keep]) + ellipsis


def _fit(text: str, max_len: int, field: str, truncate: bool) -> str:
    n = copy_length(text)
    if n <= max_len:
        return text
    if truncate:
        return truncate_copy(text, max_len)
    raise TemplateError(field, f"renders to {n} characters, more than {max_len}")


def render_content(
    content: Content,
    *,
    user: Mapping[str, Any],
    event: Mapping[str, Any] | None = None,
    limits: ContentLimits = DEFAULT_LIMITS,
    truncate: bool = False,
) -> Rendered:
    """Render every template of ``content`` and enforce the rendered length limits.

    Args:
        content: The (variant's) content.
        user: The ``user`` variable, see :func:`user_context`.
        event: The ``event`` variable, see :func:`event_context`.
        limits: Length limits of the app.
        truncate: Shorten over-long title/body with an ellipsis instead of raising.
    """
    title_max, body_max = limits.for_kind(content.kind)

    def r(text: str, field: str) -> str:
        return render(text, user=user, event=event, field=field)

    return Rendered(
        title=_fit(r(content.title, "title"), title_max, "title", truncate),
        body=_fit(r(content.body, "body"), body_max, "body", truncate),
        image_url=None if content.image_url is None else r(content.image_url, "image_url"),
        actions=tuple(
            Action(a.id, r(a.label, f"actions[{i}].label"), r(a.url, f"actions[{i}].url"))
            for i, a in enumerate(content.actions)
        ),
        data=MappingProxyType({k: r(v, f"data.{k}") for k, v in content.data.items()}),
    )
