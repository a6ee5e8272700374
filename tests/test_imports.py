"""The floors: which package may import which, no import cycles, and a light CLI.

The floor table below is the one place the layering is written down (docs/architecture.md
explains it). Every import counts, a function's lazy one too: a lazy import upward is
still an arrow upward.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "images", "pool", "gateway")

# floor -> the floors it may import (itself included). The longest matching prefix of a
# module's name is its floor: pool.contract is a leaf inside pool, gateway.cli a thin
# client inside gateway.
FLOORS: Mapping[str, frozenset[str]] = {
    "runtime": frozenset({"runtime"}),
    "images": frozenset({"images", "runtime"}),
    "pool.contract": frozenset({"pool.contract"}),
    "pool": frozenset({"pool", "pool.contract", "images", "runtime"}),
    "gateway": frozenset({"gateway", "gateway.cli", "pool.contract"}),
    "gateway.cli": frozenset({"gateway", "gateway.cli", "pool.contract"}),
}
# What `import gateway.cli` must not load, directly or through anything it imports at
# module level: the CLI is a thin HTTP client, quick to start. (http.client comes with
# its first request; `scow --help` sends none.)
CLI_BANNED = ("redis", "starlette", "uvicorn", "prometheus_client", "httpx", "yaml", "http",
              "ssl", "tarfile")  # fmt: skip


@dataclass(frozen=True)
class Import:
    module: str  # the importer
    target: str  # the first-party module imported
    line: int


def floor_of(module: str) -> str:
    best = ""
    for floor in FLOORS:
        if (module == floor or module.startswith(floor + ".")) and len(floor) > len(best):
            best = floor
    return best


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(root: Path) -> Iterator[Import]:
    """Every first-party import in the packages, resolved to the module it loads."""
    known = modules(root)
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                           for a in node.names]  # fmt: skip
            else:
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    yield Import(module, target, node.lineno)


def upward(found: list[Import]) -> list[str]:
    return [f"{i.module}:{i.line} imports {i.target} ({floor_of(i.module)} may import only "
            f"{', '.join(sorted(FLOORS[floor_of(i.module)]))})"
            for i in found if floor_of(i.target) not in FLOORS[floor_of(i.module)]]  # fmt: skip


def cycles(found: list[Import]) -> list[list[str]]:
    """Each import cycle among modules (a lazy import is how a cycle is hidden, so those
    count too)."""
    graph: dict[str, set[str]] = {}
    for i in found:
        graph.setdefault(i.module, set()).add(i.target)
    out: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                out.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return out


def test_every_module_has_a_floor() -> None:
    assert [m for m in modules(REPO) if not floor_of(m)] == []


def test_no_import_goes_up_a_floor() -> None:
    assert upward(list(imports(REPO))) == []


def test_no_import_cycles() -> None:
    assert cycles(list(imports(REPO))) == []


def _plant(tmp_path: Path, files: Mapping[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "pool" / "contract").mkdir()
    (tmp_path / "pool" / "contract" / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def test_a_planted_upward_import_is_caught_even_when_lazy(tmp_path: Path) -> None:
    root = _plant(tmp_path, {
        "pool/worker.py": "X = 1\n",
        "runtime/engine.py": "def f():\n    from pool.worker import X\n    return X\n",
        "pool/contract/keys.py": "import pool.worker\n",
        "gateway/app.py": "from runtime import engine\n",
        "images/store.py": "from runtime.engine import f\n",  # allowed: images sits on runtime
    })  # fmt: skip
    found = upward(list(imports(root)))
    assert sorted(f.split(" (")[0] for f in found) == [
        "gateway.app:1 imports runtime.engine",
        "pool.contract.keys:1 imports pool.worker",
        "runtime.engine:2 imports pool.worker",
    ]


def test_a_planted_cycle_is_caught(tmp_path: Path) -> None:
    root = _plant(tmp_path, {
        "pool/a.py": "from pool import b\n",
        "pool/b.py": "def f():\n    from pool.a import g\n",
    })  # fmt: skip
    assert cycles(list(imports(root))) == [["pool.a", "pool.b", "pool.a"]]


def test_the_cli_loads_none_of_the_servers_libraries() -> None:
    """Checked in a fresh interpreter: what `import gateway.cli` really loads."""
    probe = (f"import sys, gateway.cli; banned = {set(CLI_BANNED)!r}; "
             "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & banned)))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=60)  # fmt: skip
    assert out.stdout.strip() == ""
