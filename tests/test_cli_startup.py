"""``tidings gateway`` start-up: an unreadable database is one line and exit 2, and the
durability setting reaches the store (a real gateway in a subprocess)."""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TIMEOUT_SCALE = float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
RUN_TIMEOUT_S = 30 * TIMEOUT_SCALE

APP_ENV = {
    # Real app settings, so that the development-defaults warning stays off stderr.
    "TIDINGS_APP": "shop",
    "TIDINGS_APP_SECRET": "secret-of-the-shop-app",
    "TIDINGS_ADMIN_KEY": "admin-key-of-the-shop-app",
}


def _environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    return {**env, "PYTHONUNBUFFERED": "1", **APP_ENV, **extra}


def _gateway(db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tidings", "gateway", "--db", str(db),
            "--port", "0", "--admin-port", "0", *extra]  # fmt: skip


def _refused(db: Path, cwd: Path) -> str:
    """Run the gateway on ``db``; assert it refused in one line with exit 2; return the line."""
    done = subprocess.run(
        _gateway(db), capture_output=True, text=True, cwd=cwd, env=_environ(),
        timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tidings: error: ") and str(db) in lines[0]
    assert "listening" not in done.stdout and "admin API on" not in done.stdout
    return lines[0]


def _make_database(path: Path) -> None:
    """A real tidings database with one user in it (made by a gateway's own store)."""
    import asyncio

    from tidings.server.storage import DeviceRow, SqliteStore

    async def make() -> None:
        store = SqliteStore(str(path))
        await store.open()
        row = DeviceRow(app="shop", device_id="d1", user_id="u1", platform="", app_version="",
                        locale="", tz="", sdk_version="", first_seen=1, last_seen=1)  # fmt: skip
        await store.upsert_device(row)
        await store.close()

    asyncio.run(make())


# --- unreadable databases ----------------------------------------------------------------------


def test_gateway_on_a_file_that_is_not_a_database_exits_2_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_text("these are my notes, not a database\n" * 200)
    line = _refused(db, tmp_path)
    assert "not an SQLite database" in line and "--db" in line


@pytest.mark.parametrize("table", ["users", "campaigns", "tag_rules"])
def test_gateway_on_a_corrupt_database_exits_2_in_one_line(tmp_path: Path, table: str) -> None:
    db = tmp_path / "t.db"
    _make_database(db)
    con = sqlite3.connect(db)
    (root,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()
    (page_size,) = con.execute("PRAGMA page_size").fetchone()
    con.close()
    with db.open("r+b") as f:  # overwrite one table's root page, as a torn write could
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)
    line = _refused(db, tmp_path)
    assert "corrupt" in line and "backup" in line


def test_gateway_on_a_database_from_a_newer_version_exits_2_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    _make_database(db)
    con = sqlite3.connect(db)
    con.execute("INSERT INTO schema_version VALUES (999)")
    con.commit()
    con.close()
    line = _refused(db, tmp_path)
    assert "newer" in line and "999" in line and "upgrade" in line


def test_gateway_with_a_database_in_a_missing_directory_exits_2_in_one_line(
    tmp_path: Path,
) -> None:
    line = _refused(tmp_path / "no-such-dir" / "t.db", tmp_path)
    assert "directory" in line


def test_gateway_with_a_directory_as_its_database_exits_2_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "data"
    db.mkdir()
    line = _refused(db, tmp_path)
    assert "directory" in line


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to any directory"
)
def test_gateway_with_a_database_in_an_unwritable_directory_exits_2_in_one_line(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = _refused(folder / "t.db", tmp_path)
    finally:
        folder.chmod(0o755)
    assert "write" in line


def test_gateway_on_a_database_locked_by_another_process_exits_2_in_one_line(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    _make_database(db)
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        # As a backup tool or an sqlite3 shell can: nobody else may read or write the file.
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("DELETE FROM users WHERE 0")
        line = _refused(db, tmp_path)  # after the store's 5 s busy timeout
    finally:
        holder.close()
    assert "locked" in line and "another process" in line


# --- durability --------------------------------------------------------------------------------


def _started_line(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Start the gateway, return the line that says where it listens, stop it with SIGTERM."""
    process = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                stderr = process.stderr.read() if process.stderr else ""
                raise AssertionError(f"gateway did not start: {stderr[-2000:]}")
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if "admin API on" in line:
                return line
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_gateway_runs_full_durability_by_default(tmp_path: Path) -> None:
    line = _started_line(_gateway(tmp_path / "t.db"), tmp_path, _environ())
    assert "durability: full (synchronous=FULL)" in line


def test_gateway_durability_flag_selects_relaxed(tmp_path: Path) -> None:
    cmd = _gateway(tmp_path / "t.db", "--durability", "relaxed")
    line = _started_line(cmd, tmp_path, _environ(TIDINGS_DURABILITY="full"))
    assert "durability: relaxed (synchronous=NORMAL)" in line


def test_gateway_durability_comes_from_the_environment(tmp_path: Path) -> None:
    env = _environ(TIDINGS_DURABILITY="relaxed")
    line = _started_line(_gateway(tmp_path / "t.db"), tmp_path, env)
    assert "durability: relaxed (synchronous=NORMAL)" in line


def test_gateway_event_loop_is_asyncio_unless_uvloop_is_asked_for(tmp_path: Path) -> None:
    line = _started_line(_gateway(tmp_path / "t.db"), tmp_path, _environ())
    assert "event loop" not in line  # asyncio's own, the default
    bad = subprocess.run(
        _gateway(tmp_path / "t.db"), capture_output=True, text=True, cwd=tmp_path,
        env=_environ(TIDINGS_EVENT_LOOP="trio"), timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert bad.returncode == 2 and "event_loop must be one of asyncio, uvloop" in bad.stderr
    try:
        import uvloop  # noqa: F401
    except ModuleNotFoundError:  # not installed: asking for it says how to get it
        done = subprocess.run(
            _gateway(tmp_path / "t.db", "--event-loop", "uvloop"), capture_output=True,
            text=True, cwd=tmp_path, env=_environ(), timeout=RUN_TIMEOUT_S,
        )  # fmt: skip
        assert done.returncode == 2 and "pip install 'tidings[fast]'" in done.stderr
    else:
        cmd = _gateway(tmp_path / "t.db", "--event-loop", "uvloop")
        assert "event loop: uvloop" in _started_line(cmd, tmp_path, _environ())


def test_gateway_with_a_bad_durability_exits_2_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        _gateway(tmp_path / "t.db"), capture_output=True, text=True, cwd=tmp_path,
        env=_environ(TIDINGS_DURABILITY="fast"), timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "tidings: error: configuration: TIDINGS_DURABILITY: durability must be 'full' or "
        "'relaxed', got 'fast'"
    ]
