"""The composer: a campaign (segment with a live audience preview, content, variants, start
now) or a direct message to every device.

The preview runs ``PREVIEW_DELAY_S`` after the last key, so typing never floods the gateway; a
segment that does not parse shows the server's caret line right under the input. Errors the
admin API names a field for appear next to that field.

Keyboard first: the name field has the focus when the composer opens, Tab walks the form, and
F5 (or ctrl+r) creates and starts the campaign, F6 (or ctrl+t) sends directly; ctrl+s also
creates, where the terminal lets it through (many treat it as XOFF). A form that is empty or
incomplete says what is missing next to each field and moves the focus to the first of them.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.timer import Timer
from textual.widgets import Button, Footer, Header, Input, Label, RadioButton, RadioSet, Static

from tidings.protocol import kinds
from tidings.server.campaigns.templates import is_template
from tidings.simulator.engine.sim import AdminError
from tidings.simulator.screens.base import SimScreen
from tidings.simulator.widgets import ClockBar

__all__ = [
    "PREVIEW_DELAY_S",
    "ComposerScreen",
    "build_campaign",
    "field_target",
    "sent_summary",
    "slug",
]

PREVIEW_DELAY_S = 0.3
"""Typing pause before the audience preview is asked for."""

PREVIEW_SAMPLE = 5
KINDS = kinds.NAMES
_ERROR_TARGETS = ("name", "segment", "title", "body", "kind", "variant-b", "form")


def sent_summary(result: dict[str, Any]) -> str:
    """What a direct send's answer (``POST /v1/messages``) says, in one line: where it went
    and who was skipped, and why."""
    line = f"sent {result['message_id'][:8]} to {result['devices']:,} devices"
    skipped = result.get("skipped") or {}
    if skipped:
        why = ", ".join(f"{n:,} {_SKIPPED.get(r, r.replace('_', ' '))}"
                        for r, n in sorted(skipped.items()))  # fmt: skip
        line += f"; {sum(skipped.values()):,} users skipped: {why}"
    if result.get("no_device"):
        line += f"; {result['no_device']:,} users have no device yet (kept in their inbox)"
    return line


_SKIPPED = {
    "capped_tier": "over their tier's marketing cap",
    "capped_lifecycle": "over their lifecycle stage's cap",
    "opted_out": "opted out",
}


def slug(name: str) -> str:
    """A campaign id from its name: lower-case words joined by ``-`` (at most 48 characters)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48].strip("-")


def build_campaign(
    *, name: str, segment: str, title: str, body: str, kind: str, variant_b: str = ""
) -> dict[str, Any]:
    """The JSON of a one-off campaign; a ``variant_b`` title adds an A/B test at 50/50."""
    spec: dict[str, Any] = {
        "id": slug(name),
        "app": "demo",
        "name": name.strip(),
        "kind": "one_off",
        "segment": segment.strip() or "everyone",
        "content": {"kind": kind, "title": title, "body": body, "category": "marketing"},
    }
    if variant_b.strip():
        spec["variants"] = [
            {"name": "a", "weight": 50},
            {"name": "b", "weight": 50, "content": {"title": variant_b.strip()}},
        ]
    return spec


def field_target(field: str | None) -> str:
    """Which part of the form an admin API error about ``field`` belongs to."""
    if not field:
        return "form"
    head, _, rest = field.partition(".")
    head = head.split("[")[0]
    if head in ("id", "name"):
        return "name"
    if head in ("segment", "text"):
        return "segment"
    if head == "variants":
        return "variant-b"
    if head == "content":
        sub = rest.split(".")[0]
        return sub if sub in ("title", "body", "kind") else "form"
    return head if head in ("title", "body", "kind") else "form"


class ComposerScreen(SimScreen):
    """Compose a campaign for a segment, or a direct message to everyone."""

    AUTO_FOCUS = "#name"
    BINDINGS: ClassVar[list[BindingType]] = [
        # F5 and ctrl+r reach the app in tmux and screen; ctrl+s often does not (XOFF).
        Binding("f5,ctrl+r", "create", "Create & start", key_display="F5", priority=True),
        Binding("f6,ctrl+t", "send", "Send to all", key_display="F6", priority=True),
        Binding("ctrl+s", "create", show=False, priority=True),
        # The fields take every letter, q too: show the quit key that still works here.
        Binding("ctrl+q", "app.quit", "Quit", key_display="^q", priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._preview_timer: Timer | None = None
        self._preview_seq = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield ClockBar(id="clock")
        with VerticalScroll(id="form"):
            yield from self._row(
                "Name", Input(placeholder="required, e.g. Spring sale", id="name"), "name"
            )
            yield from self._row(
                "Segment",
                Input(
                    placeholder='empty: everyone; e.g. attr.persona = "sports_fan" and tag:vip',
                    id="segment",
                ),
                "segment",
                hint="empty: everyone",
            )
            yield from self._row(
                "Title", Input(placeholder="e.g. 20% off running shoes", id="title"), "title"
            )
            yield from self._row(
                "Body",
                Input(
                    placeholder='e.g. Hi {{ user.first_name | default("there") }}, ends Sunday',
                    id="body",
                ),
                "body",
            )
            with Horizontal(classes="form-row"):
                yield Label("Kind", classes="field-label")
                with RadioSet(id="kind"):
                    for name in KINDS:
                        yield RadioButton(name, id=f"kind-{name}", value=name == "both")
            yield Static("", id="kind-error", classes="field-error")
            yield from self._row(
                "Variant b",
                Input(placeholder="optional: a second title to A/B test at 50/50", id="variant-b"),
                "variant-b",
            )
            with Horizontal(classes="form-row"):
                yield Label("Schedule", classes="field-label")
                yield Static("now: the campaign starts as soon as it is created", id="schedule")
            yield Static("", id="form-error", classes="field-error")
        # Outside the scrolling form: the buttons stay in sight on a 24-line terminal.
        with Horizontal(id="actions"):
            yield Button("Create & start  F5", id="create", variant="primary")
            yield Button("Send to all now (direct)  F6", id="send")
        yield Footer()

    @staticmethod
    def _row(label: str, field: Input, name: str, hint: str = "") -> ComposeResult:
        with Horizontal(classes="form-row"):
            yield Label(label, classes="field-label")
            with Vertical(classes="field"):
                yield field
                if name == "segment":
                    yield Static(hint, id="preview", classes="-hint")
                else:
                    yield Static("", id=f"{name}-error", classes="field-error")

    def on_mount(self) -> None:
        self.watch(self.app, "status", lambda _status: self._schedule_preview())

    def on_screen_resume(self) -> None:
        """Opening the composer puts the cursor in its first field (unless one has it already)."""
        if not isinstance(self.focused, Input):
            self.query_one("#name", Input).focus()

    # --- live audience preview ----------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "segment":
            event.input.remove_class("-invalid")
            self._schedule_preview()
        elif event.input.id in _ERROR_TARGETS:
            self._clear_error(event.input.id)
            if event.input.id == "body":  # "a title or a body" is shown under the title
                self._clear_error("title")

    def _schedule_preview(self) -> None:
        if self._preview_timer is not None:
            self._preview_timer.stop()
        self._preview_seq += 1
        if not self.sim.running:
            self._set_preview("the audience preview starts once the gateway is up", "-hint")
            return
        seq, text = self._preview_seq, self.query_one("#segment", Input).value
        self._set_preview("…", "-pending")
        self._preview_timer = self.set_timer(PREVIEW_DELAY_S, lambda: self.preview(seq, text))

    @work(thread=True, group="preview")
    def preview(self, seq: int, text: str) -> None:
        """Ask the gateway for the audience of ``text`` (an answer to an older text is dropped)."""
        try:
            result = self.engine.preview(text.strip() or "everyone", PREVIEW_SAMPLE)
        except AdminError as exc:
            self.deliver(self._preview_failed, seq, exc)
            return
        self.deliver(self._preview_done, seq, result)

    def _preview_done(self, seq: int, result: dict[str, Any]) -> None:
        if seq != self._preview_seq:
            return
        count, sample = int(result.get("count", 0)), list(result.get("sample", []))
        line = Text()
        line.append(f"{count:,} users", style="bold")
        if sample:
            more = " …" if count > len(sample) else ""
            line.append(f"  e.g. {', '.join(map(str, sample))}{more}")
        line.append(f"  ·  {result.get('text', '')}", style="dim")
        self._set_preview(line, "-ok")

    def _preview_failed(self, seq: int, exc: AdminError) -> None:
        if seq != self._preview_seq:
            return
        if exc.missing_endpoint:
            self._set_preview(f"audience preview not available on this gateway: {exc.reason}",
                              "-error")  # fmt: skip
        else:
            self._set_preview(exc.detail, "-error")

    def _set_preview(self, content: str | Text, state: str) -> None:
        try:
            preview = self.query_one("#preview", Static)
        except NoMatches:  # the screen is being taken down (the app closes): drop the answer
            return
        preview.update(Text(content) if isinstance(content, str) else content)
        for name in ("-hint", "-pending", "-ok", "-error"):
            preview.set_class(name == state, name)

    # --- errors next to their fields ------------------------------------------------------------

    def _error_widget(self, target: str) -> Static:
        return self.query_one("#preview" if target == "segment" else f"#{target}-error", Static)

    def show_error(self, target: str, message: str, *, focus: bool = False) -> None:
        """Show ``message`` under the field ``target`` (one of the form's field names).

        Args:
            focus: Also move the focus to that field (when it is one that takes text).
        """
        if target == "segment":
            self._set_preview(message, "-error")
        else:
            widget = self._error_widget(target)
            widget.update(Text(message))
            widget.add_class("-shown")
        field = self.query(f"#{target}").first() if target != "form" else None
        if isinstance(field, Input):
            field.add_class("-invalid")
        if focus and isinstance(field, Input | RadioSet):
            field.focus()

    def _clear_error(self, target: str) -> None:
        if target != "segment":
            widget = self._error_widget(target)
            widget.update("")
            widget.remove_class("-shown")
        if target != "form":
            self.query(f"#{target}").remove_class("-invalid")

    def _clear_errors(self) -> None:
        for target in _ERROR_TARGETS:
            self._clear_error(target)

    def _failed(self, exc: AdminError, what: str) -> None:
        target = field_target(exc.field)
        if exc.missing_endpoint:
            self.show_error("form", f"{what}: not available on this gateway yet ({exc.reason})")
        elif target == "form":
            self.show_error("form", f"{what}: {exc.reason}")
        else:
            self.show_error(target, exc.detail, focus=True)
        self.notify(f"{what} failed: {exc.reason.splitlines()[0]}", severity="error")

    # --- submitting -----------------------------------------------------------------------------

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.focus_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "create":
            self.action_create()
        elif event.button.id == "send":
            self.action_send()

    def _value(self, name: str) -> str:
        return self.query_one(f"#{name}", Input).value

    @property
    def kind(self) -> str:
        """The content kind picked (one of :data:`KINDS`)."""
        pressed = self.query_one("#kind", RadioSet).pressed_button
        return "both" if pressed is None or pressed.id is None else pressed.id.removeprefix("kind-")

    def form_problems(self) -> list[tuple[str, str]]:
        """What keeps the form from making a campaign, as ``(field, message)`` in form order."""
        problems: list[tuple[str, str]] = []
        if not self._value("name").strip():
            problems.append(("name", "required: give the campaign a name"))
        elif not slug(self._value("name")):
            problems.append(("name", "the name needs at least one letter or digit"))
        if not self._value("title").strip() and not self._value("body").strip():
            problems.append(("title", "required: a title, a body, or both"))
        return problems

    def action_create(self) -> None:
        """Create the campaign from the form and start it now."""
        self._clear_errors()
        problems = self.form_problems()
        if problems:
            for target, message in problems:
                self.show_error(target, message)
            fields = ", ".join(target for target, _ in problems)
            self.show_error("form", f"nothing was created: fill in {fields} (marked above)")
            self.show_error(problems[0][0], problems[0][1], focus=True)
            return
        name = self._value("name")
        spec = build_campaign(name=name, segment=self._value("segment"), title=self._value("title"),
                              body=self._value("body"), kind=self.kind,
                              variant_b=self._value("variant-b"))  # fmt: skip
        self.create(spec)

    @work(thread=True, exclusive=True, group="submit")
    def create(self, spec: dict[str, Any]) -> None:
        try:
            self.engine.create_campaign(spec)
        except AdminError as exc:
            self.deliver(self._failed, exc, "create campaign")
            return
        try:
            self.engine.campaign_action(spec["id"], "start")
        except AdminError as exc:
            self.deliver(self._failed, exc, f"created {spec['id']}, but start")
            return
        self.deliver(self._created, spec["id"])

    def _created(self, campaign: str) -> None:
        self.notify(f"campaign {campaign} started")
        self.sim.selected_campaign = campaign
        self.app.switch_mode("campaigns")

    def action_send(self) -> None:
        """Send the title and body now, directly and as written, to every device's user.

        A direct send is not personalised: copy with template syntax is refused here with the
        way to send it (a campaign, F5), rather than delivered as ``{{ … }}``.
        """
        self._clear_errors()
        title = self._value("title") or "Hello"
        body = self._value("body") or "from the simulator"
        for target, text in (("title", title), ("body", body)):
            if is_template(text):
                self.show_error(target, "a direct send (F6) goes out as written, so {{ … }}"
                                " is not filled in: press F5 to send it as a campaign, which"
                                " renders it for each user", focus=True)  # fmt: skip
                return
        self.send(title, body, self.kind)

    @work(thread=True, group="send")
    def send(self, title: str, body: str, kind: str) -> None:
        try:
            result = self.engine.send(title=title, body=body, kind=kind)
        except AdminError as exc:
            self.deliver(self._failed, exc, "send")
            return
        self.deliver(self.notify, sent_summary(result))
