"""Layering rules of the code base, checked on the source (STYLE.md §1, §9)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "src" / "tidings"


def imports_of(folder: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in (ROOT / folder).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(f.relative_to(ROOT))] = names
    return out


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path}: {name}"
        for path, names in imports_of(folder).items()
        for name in names
        if name == forbidden
        or (
            name.startswith(forbidden)
            and any(name == f or name.startswith(f + ".") for f in forbidden)
        )
    ]


def test_protocol_is_sans_io_stdlib_and_msgpack_only() -> None:
    allowed = set(sys.stdlib_module_names) | {"msgpack", "tidings"}
    bad = [
        f"{path}: {name}"
        for path, names in imports_of("protocol").items()
        for name in names
        if name.split(".")[0] not in allowed
        or name.split(".")[0] in {"asyncio", "socket", "selectors"}
        or name.startswith(("tidings.server", "tidings.client_sdk", "tidings.simulator"))
    ]
    assert not bad


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("client_sdk", ("tidings.server", "tidings.simulator", "fastapi", "uvicorn", "jinja2")),
        ("server", ("tidings.client_sdk", "tidings.simulator", "textual")),
    ],
)
def test_packages_do_not_reach_across_layers(folder: str, forbidden: tuple[str, ...]) -> None:
    assert not offenders(folder, forbidden)


def test_the_sdk_imports_textual_only_in_its_ui_extra() -> None:
    bad = [
        o
        for o in offenders("client_sdk", ("textual", "rich"))
        if not o.startswith("client_sdk/ui/")
    ]
    assert not bad
    assert offenders("client_sdk", ("textual",))  # the widgets are there


def test_the_simulator_engine_does_not_import_textual() -> None:
    if (ROOT / "simulator" / "engine").exists():
        assert not offenders("simulator/engine", ("textual",))


def test_sql_lives_only_under_server_storage() -> None:
    bad = []
    for f in (ROOT / "server").rglob("*.py"):
        if "storage" in f.relative_to(ROOT / "server").parts:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.upper()
                if any(
                    k in text for k in ("SELECT ", "INSERT INTO", "DELETE FROM", "UPDATE ")
                ) and (" FROM " in text or "INTO " in text or " SET " in text):
                    bad.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not bad


def _module_imports() -> dict[str, set[str]]:
    """Every product module and the product modules it imports: at the top, inside functions
    and under ``TYPE_CHECKING`` alike (a loop hidden in a function is still a loop)."""
    files = {}
    for f in ROOT.rglob("*.py"):
        parts = ("tidings", *f.relative_to(ROOT).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {}
    for name, f in files.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in files else node.module)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def test_no_product_module_imports_itself_through_others() -> None:
    graph = _module_imports()
    loops: list[list[str]] = []
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> None:
        for nxt in sorted(graph[module]):
            if nxt in path:
                loops.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                walk(nxt, [*path, nxt])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            walk(module, [module])
    assert not loops, "\n".join(" -> ".join(loop) for loop in loops[:5])
    assert len(graph) > 90 and "tidings.protocol.kinds" in graph["tidings.protocol.frames"]
