"""The house: imports flow one way (a module imports only modules on its floor or below, and no cycle),
counting imports inside functions too; no function over 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "sslandmarks"
# From the ground up. A module may import modules of its own floor (without a cycle) or of lower floors.
FLOORS: list[tuple[str, ...]] = [
    # 0. the functional core, plain data and drawing: no model, no dataset, no workflow
    ("errors", "coords", "geometry", "softargmax", "specs", "metrics", "losses", "config", "outputs",
     "pretrained", "tables", "viz", "boxes", "hardware"),
    # 1. models and data, checkpoints (weights + config -> a model), and how convolutions train (fftconv)
    ("models", "data", "checkpoint", "fftconv"),
    # 2. a trained model on many images, and the public API (a model on your images)
    ("inference", "api"),
    # 3. the workflows
    ("train", "evaluate", "predict", "video", "export"),
    # 4. what composes workflows
    ("runner", "report", "demo", "bench", "time_to_accuracy", "latency"),
    # 5. the command line, and the package itself (its lazy ``load`` reaches the API)
    ("cli", "__main__", "sslandmarks"),
]
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _floor(module: str) -> int:
    """``sslandmarks.data.files`` -> the floor of ``data``; the package itself is on the top floor."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else parts[0]
    for i, names in enumerate(FLOORS):
        if name in names:
            return i
    raise AssertionError(f"{module} is on no floor: add it to FLOORS in {Path(__file__).name}")


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules that ``module`` imports anywhere in its file (top level or inside functions)."""
    base = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            root = node.module or ""
            if node.level:  # relative import
                b = base
                for _ in range(node.level - 1):
                    b = b.rpartition(".")[0]
                root = f"{b}.{root}" if root else b
            targets = [f"{root}.{a.name}" for a in node.names] + [root]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != module and t != "sslandmarks":
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, f, modules) for m, f in modules.items()}


def test_every_module_has_a_floor_and_imports_nothing_above_it():
    upward = [f"{m} (floor {_floor(m)}) imports {t} (floor {_floor(t)})"
              for m, targets in _graph().items() for t in sorted(targets) if _floor(t) > _floor(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_function_local_imports_and_cycles(tmp_path):
    """The walk above must catch an import hidden inside a function (it can fail)."""
    pkg = tmp_path / "sslandmarks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "coords.py").write_text("def f():\n    from sslandmarks.train import fit\n")
    (pkg / "train.py").write_text("from sslandmarks import coords\n")
    modules = {"sslandmarks.coords": pkg / "coords.py", "sslandmarks.train": pkg / "train.py"}
    assert _imports("sslandmarks.coords", pkg / "coords.py", modules) == {"sslandmarks.train"}
    assert _imports("sslandmarks.train", pkg / "train.py", modules) == {"sslandmarks.coords"}
    assert _floor("sslandmarks.train") > _floor("sslandmarks.coords")


def test_no_function_is_longer_than_80_lines():
    long = []
    for f in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{f.relative_to(PACKAGE)}:{node.name} has {n} lines")
    assert not long, "\n".join(long)
