"""The wheel holds every module and data file; the core install needs no server extras."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "server", "client_sdk", "simulator", "tidings")
SERVER_ONLY = ("fastapi", "uvicorn", "jinja2", "textual", "starlette", "pydantic")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)]
    subprocess.run([*command, str(ROOT)], check=True, capture_output=True)
    (path,) = out.glob("tidings-*.whl")
    return zipfile.ZipFile(path)


def _expected_files() -> set[str]:
    expected = set()
    for folder in PACKAGES:
        base = ROOT / folder
        for f in base.rglob("*"):
            if "__pycache__" in f.parts or not f.is_file():
                continue
            if f.suffix in {".py", ".sql", ".tcss"} or f.name == "PROTOCOL.md":
                rel = f.relative_to(base).as_posix()
                prefix = "tidings/" if folder == "tidings" else f"tidings/{folder}/"
                expected.add(prefix + rel)
    return expected


def test_the_wheel_holds_every_module_and_data_file(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    missing = _expected_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert any(n.endswith("migrations/0001_init.sql") for n in names)
    assert "tidings/protocol/PROTOCOL.md" in names


def test_core_requirements_leave_server_and_simulator_to_extras(wheel: zipfile.ZipFile) -> None:
    meta_name = next(n for n in wheel.namelist() if n.endswith("METADATA"))
    meta = Parser().parsestr(wheel.read(meta_name).decode())
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"server", "ui", "simulator", "dev", "all"} <= extras
    core = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert core and not [r for r in core if r.lower().startswith(SERVER_ONLY)]


def test_the_sdk_imports_without_any_server_package() -> None:
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {SERVER_ONLY!r}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import tidings.protocol\n"
        "from tidings.client_sdk import TidingsClient, QuietHours, SyncTidingsClient\n"
        "import tidings.cli\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in " + repr(SERVER_ONLY) + "]\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True,
                            cwd="/")  # fmt: skip
    assert result.stdout.strip() == "ok", result.stderr
