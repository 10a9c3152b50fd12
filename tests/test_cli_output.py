"""What the ``tidings`` command line prints: carets, counts, and a reader that went away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_cli
from test_cli import START_TIMEOUT_S, Gateway, _clean_environ

from tidings.cli import main
from tidings.cli.common import plural

gateway = test_cli.gateway
"""The gateway subprocess the other command-line tests use (one per module)."""


def test_segment_preview_puts_the_caret_under_the_bad_token(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--admin-url", gateway.admin_url]
    assert main(["segment", "preview", "tier = vip", *url]) == 1
    err = capsys.readouterr().err
    assert err == (
        "tidings: error: text: tier = vip\n"
        "                             ^ expected one of high_value, potential, basic, dormant"
        " (HTTP 422)\n"
    )
    line = err.splitlines()
    assert line[0].index("vip") == line[1].index("^")


def test_campaign_create_puts_the_caret_under_the_bad_segment_token(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"id": "caret", "name": "Caret", "kind": "one_off",
                                "segment": "lifecycle = asleep",
                                "content": {"title": "t", "body": "b"}}))  # fmt: skip
    assert main(["campaign", "create", str(path), "--admin-url", gateway.admin_url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tidings: error: segment: lifecycle = asleep\n")
    line = err.splitlines()
    assert line[0].index("asleep") == line[1].index("^")


def test_a_template_error_without_a_column_names_only_the_line(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.json"
    content = {"title": "{{ user.id | attr('x') }}", "body": "b"}
    path.write_text(json.dumps({"id": "tpl", "name": "Tpl", "kind": "one_off", "content": content}))
    assert main(["campaign", "create", str(path), "--admin-url", gateway.admin_url]) == 1
    err = capsys.readouterr().err
    assert "content.title: filter 'attr' is not allowed (line 1) (HTTP 422)" in err
    assert "None" not in err


def test_counts_are_pluralised(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    url = ["--admin-url", gateway.admin_url]
    assert main(["user", "set", "plural-1", "cohort=plural", *url]) == 0
    capsys.readouterr()
    assert main(["segment", "preview", 'attr.cohort = "plural"', *url]) == 0
    assert capsys.readouterr().out.startswith('1 user matches: attr.cohort = "plural"')
    assert main(["user", "set", "plural-2", "cohort=plural", *url]) == 0
    capsys.readouterr()
    assert main(["segment", "preview", 'attr.cohort = "plural"', *url]) == 0
    assert capsys.readouterr().out.startswith("2 users match: ")
    assert main(["segment", "preview", 'attr.cohort = "nobody"', *url]) == 0
    assert capsys.readouterr().out.startswith("0 users match: ")


@pytest.mark.parametrize(
    ("n", "noun", "shown"),
    [(0, "user", "0 users"), (1, "user", "1 user"), (2, "user", "2 users"),
     (1, "device delivery", "1 device delivery"), (3, "device delivery", "3 device deliveries"),
     (2, "day", "2 days")],
)  # fmt: skip
def test_count_names_one_thing_in_the_singular(n: int, noun: str, shown: str) -> None:
    assert plural(n, noun) == shown


def _run_into_a_closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``tidings ARGS`` with stdout a pipe whose reader has already gone away."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "tidings", *args], stdout=write, stderr=subprocess.PIPE,
            env=_clean_environ(), timeout=START_TIMEOUT_S, check=False,
        )  # fmt: skip
    finally:
        os.close(write)


def test_a_command_whose_reader_went_away_exits_quietly() -> None:
    done = _run_into_a_closed_pipe("token", "--device", "phone-1")
    assert done.stderr == b""
    assert done.returncode == 1


def test_user_show_into_a_closed_pipe_prints_no_traceback(gateway: Gateway) -> None:
    assert main(["user", "set", "piped", "cohort=pipe", "--admin-url", gateway.admin_url]) == 0
    done = _run_into_a_closed_pipe("user", "show", "piped", "--admin-url", gateway.admin_url)
    assert done.stderr == b"", done.stderr.decode()
    assert done.returncode == 1
