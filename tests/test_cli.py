"""The ``tidings`` command line, including a real gateway in a subprocess."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tidings.cli import main
from tidings.protocol.tokens import verify_token

TIMEOUT_SCALE = float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
START_TIMEOUT_S = 30 * TIMEOUT_SCALE


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TIDINGS_"):
            monkeypatch.delenv(name)


def _clean_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- help --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("gateway", ["--host", "--port", "--admin-port", "--db", "--config", "examples:"]),
        ("token", ["--device", "--user", "--app", "--ttl", "--secret", "examples:"]),
        (
            "send",
            [
                *("--to-user", "--to-device", "--title", "--body", "--kind", "--category"),
                *("--priority", "--ttl", "--collapse-key", "--admin-url", "--admin-key", "--app"),
            ],
        ),
        ("campaign", ["create", "list", "show", "start", "pause", "cancel", "stats"]),
        ("why", ["--limit", "--tz", "--admin-url", "--json"]),
        ("user", ["show", "export", "erase", "set"]),
    ],
)
def test_each_subcommand_has_help_naming_its_options(
    command: str, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in options:
        assert option in out
    assert "examples:" in out and f"tidings {command}" in out


def test_top_level_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("gateway", "token", "send"):
        assert command in out


def test_python_dash_m_tidings_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tidings", "--version"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        env=_clean_environ(),
    )
    assert done.returncode == 0
    assert done.stdout.startswith("tidings ")


# --- token -------------------------------------------------------------------------------------


def test_token_verifies_with_the_dev_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--device", "phone-1", "--user", "alice", "--ttl", "600"]) == 0
    token = capsys.readouterr().out.strip()
    claims = verify_token(token, secret="dev-secret", app="demo")
    assert (claims.device, claims.user) == ("phone-1", "alice")
    assert claims.expires_at - claims.issued_at == 600


def test_token_for_another_app_uses_the_given_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--app", "shop", "--secret", "s3cret-s3cret", "--device", "d"]) == 0
    claims = verify_token(capsys.readouterr().out.strip(), secret="s3cret-s3cret", app="shop")
    assert claims.user is None


def test_token_reads_the_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIDINGS_APP", "shop")
    monkeypatch.setenv("TIDINGS_APP_SECRET", "env-secret-123")
    assert main(["token", "--device", "d"]) == 0
    verify_token(capsys.readouterr().out.strip(), secret="env-secret-123", app="shop")


def test_token_reads_the_secret_from_a_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text(
        '[[apps]]\nid = "shop"\nsecret = "file-secret-123"\nadmin_key = "file-admin-key"\n'
    )
    assert main(["token", "--config", str(config), "--app", "shop", "--device", "d"]) == 0
    verify_token(capsys.readouterr().out.strip(), secret="file-secret-123", app="shop")


def test_token_without_a_secret_for_the_app_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--app", "shop", "--device", "d"]) == 2
    assert "--secret" in capsys.readouterr().err


def test_token_with_a_bad_ttl_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--device", "d", "--ttl", "0"]) == 2
    assert "ttl" in capsys.readouterr().err


# --- gateway errors that need no running gateway -----------------------------------------------


def test_gateway_with_a_bad_config_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gateway", "--config", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert "missing.toml" in err and "configuration" in err


def test_gateway_without_the_server_extras_says_how_to_install_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert main(["gateway", "--port", "0", "--admin-port", "0"]) == 2
    assert "pip install 'tidings[server]'" in capsys.readouterr().err


def test_send_to_a_closed_port_tells_how_to_start_a_gateway(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    args = ["send", "--to-user", "u", "--title", "t", "--body", "b", "--admin-url", url]
    assert main(args) == 1
    assert "tidings gateway" in capsys.readouterr().err


def test_send_with_bad_data_json_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["send", "--to-user", "u", "--title", "t", "--body", "b", "--data", "{nope"]
    assert main(args) == 2
    assert "--data" in capsys.readouterr().err


# --- against a real gateway --------------------------------------------------------------------


@dataclass
class Gateway:
    """A ``python -m tidings gateway`` subprocess and what it printed."""

    process: subprocess.Popen[str]
    admin_url: str
    admin_port: int
    stdout: list[str]
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def _start_gateway(tmp: Path, *extra: str) -> tuple[subprocess.Popen[str], queue.Queue[str], Path]:
    stderr_path = tmp / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tidings", "gateway", "--db", str(tmp / "t.db"), *extra],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=tmp,
            env=_clean_environ(),
        )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return process, lines, stderr_path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    process, lines, stderr_path = _start_gateway(tmp, "--port", "0", "--admin-port", "0")
    seen: list[str] = []
    admin_url = ""
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not admin_url:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                raise AssertionError(
                    f"gateway did not start: {seen} {stderr_path.read_text()[-2000:]}"
                )
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            seen.append(line)
            if "admin API on " in line:
                admin_url = line.split("admin API on ")[1].split()[0]
        with urllib.request.urlopen(f"{admin_url}/healthz", timeout=START_TIMEOUT_S) as r:
            assert json.loads(r.read())["status"] == "ok"
        yield Gateway(
            process=process,
            admin_url=admin_url,
            admin_port=int(admin_url.rsplit(":", 1)[1]),
            stdout=seen,
            stderr_path=stderr_path,
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
            # A clean SIGTERM shutdown is part of the contract.
            assert code == 0, stderr_path.read_text()[-2000:]


def test_gateway_warns_loudly_about_development_defaults(gateway: Gateway) -> None:
    err = gateway.stderr()
    assert "DEVELOPMENT DEFAULTS" in err
    assert "dev-secret" in err and "dev-admin-key" in err and "TIDINGS_APP_SECRET" in err


def test_gateway_prints_where_it_listens(gateway: Gateway) -> None:
    listening = "".join(gateway.stdout)
    assert "ws://127.0.0.1:" in listening and "http://127.0.0.1:" in listening


def test_send_through_a_real_gateway_succeeds(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["send", "--to-user", "alice", "--to-user", "bob", "--title", "Hi", "--body", "Hello"]
    args += ["--kind", "banner", "--ttl", "600", "--collapse-key", "greeting"]
    args += ["--action", "open", "Open", "app://home", "--data", '{"k": 1}']
    assert main([*args, "--admin-url", gateway.admin_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sent ") and "device deliveries" in out
    # Nobody has a device: a banner cannot wait for one, and the output says so in words.
    assert "skipped 2: the user has no device for a banner (no_device)" in out
    inbox = ["send", "--to-user", "carol", "--title", "Hi", "--body", "Hello", "--kind", "inbox"]
    assert main([*inbox, "--admin-url", gateway.admin_url]) == 0
    assert "1 user with no device yet: kept in their inbox" in capsys.readouterr().out


def test_send_json_output_has_the_message_id(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["send", "--to-device", "phone-1", "--title", "Hi", "--body", "Hello", "--json"]
    assert main([*args, "--admin-url", gateway.admin_url]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ids"] == [result["message_id"]]


def test_send_subprocess_uses_the_environment_for_url_and_key(gateway: Gateway) -> None:
    env = {**_clean_environ(), "TIDINGS_ADMIN_URL": gateway.admin_url}
    done = subprocess.run(
        [sys.executable, "-m", "tidings", "send", "--to-user", "u", "--title", "T", "--body", "B"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sent ")


def test_bad_send_prints_the_field_error_and_exits_1(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["send", "--to-user", "u", "--kind", "banner", "--title", "x" * 31, "--body", "b"]
    assert main([*args, "--admin-url", gateway.admin_url]) == 1
    err = capsys.readouterr().err
    assert "title" in err and "30" in err and "HTTP 422" in err


def test_send_with_a_wrong_admin_key_exits_1(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["send", "--to-user", "u", "--title", "t", "--body", "b", "--admin-key", "nope-nope"]
    assert main([*args, "--admin-url", gateway.admin_url]) == 1
    assert "HTTP 401" in capsys.readouterr().err


def test_campaign_create_start_stats_and_why_through_a_real_gateway(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--admin-url", gateway.admin_url]
    for user in ("cli-u1", "cli-u2"):
        assert main(["user", "set", user, "cohort=cli", "age=30", "first_name=Ada", *url]) == 0
    out = capsys.readouterr().out
    assert '"cohort": "cli"' in out and '"age": 30' in out and "lifecycle:" in out
    assert main(["user", "set", "cli-u2", "vip=true", *url]) == 0
    capsys.readouterr()
    spec = {
        "id": "cli-sale", "name": "CLI sale", "kind": "one_off",
        "segment": 'attr.cohort = "cli"',
        "content": {"kind": "banner", "title": "Hi {{ user.first_name | default('you') }}",
                    "body": "20% off"},
        "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
    }  # fmt: skip
    path = tmp_path / "sale.json"
    path.write_text(json.dumps(spec))
    assert main(["campaign", "create", str(path), *url]) == 0
    assert capsys.readouterr().out.startswith("cli-sale: draft (one_off, sent 0)")
    assert main(["campaign", "list", *url]) == 0
    assert "cli-sale: draft" in capsys.readouterr().out
    assert main(["campaign", "start", "cli-sale", *url]) == 0
    started = capsys.readouterr().out  # a banner cannot wait for a device that does not exist
    assert "cli-sale: completed (one_off, sent 0) - CLI sale, skipped 2 with no device" in started
    assert main(["campaign", "stats", "cli-sale", *url]) == 0
    stats = capsys.readouterr().out
    assert "variant" in stats and "targeted" in stats and "total" in stats
    assert main(["why", "cli-sale", "cli-u1", *url]) == 0
    why = capsys.readouterr().out
    assert why.startswith("cli-u1 and campaign cli-sale: decisions newest first")
    assert "  no_device [variant " in why and "the user has no device for a banner" in why
    assert "(your local zone; --tz to change)" in why
    assert main(["why", "cli-sale", "nobody", *url]) == 0
    nobody = capsys.readouterr().out
    assert "no decisions" in nobody or "not_in_segment: not in the campaign's segment" in nobody
    assert main(["user", "show", "cli-u2", *url]) == 0
    shown = capsys.readouterr().out
    assert "lifecycle:" in shown and '"vip": true' in shown
    assert main(["user", "erase", "cli-u2", *url]) == 0
    assert main(["user", "show", "cli-u2", *url]) == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_campaign_create_names_the_bad_field(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"id": "bad", "name": "Bad", "kind": "one_off",
                                "content": {"kind": "banner", "title": "{{ user.nick }}",
                                            "body": "b"}}))  # fmt: skip
    assert main(["campaign", "create", str(path), "--admin-url", gateway.admin_url]) == 1
    err = capsys.readouterr().err
    assert "content.title" in err and "HTTP 422" in err
    path.write_text("{nope")
    assert main(["campaign", "create", str(path), "--admin-url", gateway.admin_url]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_campaign_create_takes_measurement_settings_and_names_a_bad_one(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--admin-url", gateway.admin_url, "--json"]
    spec: dict[str, object] = {
        "id": "cli-measured", "name": "Measured", "kind": "one_off",
        "content": {"kind": "inbox", "title": "T", "body": "b"},
        "variants": [{"name": "a"}, {"name": "b"}],
        "conversion": {"event": "order_paid", "where": {"sku": "x"}, "window_s": 7200},
        "min_sample_per_variant": 300,
        "rollout": {"test_share": 0.25, "decide_after_s": 7200, "at_deadline": "base"},
    }  # fmt: skip
    path = tmp_path / "measured.json"
    path.write_text(json.dumps(spec | {"rollout": {"test_share": 2, "decide_after_s": 60}}))
    assert main(["campaign", "create", str(path), *url]) == 1
    err = capsys.readouterr().err
    assert "rollout.test_share" in err and "HTTP 422" in err
    path.write_text(json.dumps(spec))
    assert main(["campaign", "create", str(path), *url]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["conversion"]["window_s"] == 7200 and created["min_sample_per_variant"] == 300
    assert created["rollout"]["at_deadline"] == "base"
    assert main(["campaign", "stats", "cli-measured", "--admin-url", gateway.admin_url]) == 0
    out = capsys.readouterr().out
    assert "compared on conversion (order_paid where sku eq 'x', within 2 h)" in out
    assert "roll-out: not started (tests on 25% first)" in out


def test_gateway_on_a_port_in_use_exits_2(gateway: Gateway, tmp_path: Path) -> None:
    port = str(gateway.admin_port)
    process, _, stderr_path = _start_gateway(tmp_path, "--port", "0", "--admin-port", port)
    try:
        assert process.wait(timeout=START_TIMEOUT_S) == 2
    finally:
        if process.poll() is None:
            process.kill()
    err = stderr_path.read_text()
    assert "--admin-port" in err and port in err


def test_demo_runs_a_gateway_and_a_device_that_shows_the_welcome_banner(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tidings", "demo", "--port", "0", "--admin-port", "0",
         "--db", str(tmp_path / "demo.db"), "--seconds", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "BANNER" in result.stdout and "Welcome to Tidings" in result.stdout
    assert "tidings send" in result.stdout
