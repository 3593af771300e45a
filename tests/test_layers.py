"""The module graph, read from the source with `ast` (imports inside functions count too): three packages along the
install extras, imports that only point down between them, no cycle between modules, no private name taken from
another module.

    congkit/            the library (core install): decoding, rewards, tokens, models, generation, hub/
    congkit/pipeline/   congkit[train]: the algorithm, its baselines, the world, the cached runner, the verdicts
    congkit/study/      congkit[study]: profiles, notebooks, the book, tables and figures
"""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import congkit

PACKAGE = Path(congkit.__file__).parent
RANK = {"library": 0, "pipeline": 1, "study": 2}  # a module may import its own package or one of lower rank


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("pipeline", "study") else "library"


def imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported congkit module, names taken from it) for every import of congkit code in `module`."""
    path = MODULES[module]
    base = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                up = base.split(".")[: len(base.split(".")) - (node.level - 1)]
                target = ".".join(up + ([target] if target else []))
            if not target.startswith("congkit"):
                continue
            for alias in node.names:  # `from congkit.pipeline import cong` imports a module
                sub = f"{target}.{alias.name}"
                out.append((sub, []) if sub in MODULES else (target, [alias.name]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("congkit")]
    return [(t, names) for t, names in out if t in MODULES]


def test_packages_follow_the_extras_and_import_only_down():
    facade = "congkit"  # `congkit/__init__.py` re-exports the public names of all three, lazily (on first use)
    upward = [f"{m} -> {t}" for m in MODULES if m != facade for t, _ in imports(m)
              if RANK[package_of(t)] > RANK[package_of(m)]]  # fmt: skip
    assert not upward, upward
    hub = [f"{m} -> {t}" for m in MODULES if m.startswith("congkit.hub.") for t, _ in imports(m)
           if not t.startswith("congkit.hub.")]  # fmt: skip
    assert not hub, hub  # the Hub folder is self-contained: `trust_remote_code` users get no congkit


def test_no_module_takes_a_private_name_from_another():
    private = [f"{m} takes {t}.{n}" for m in MODULES for t, names in imports(m) for n in names if n.startswith("_")]
    assert not private, private


def test_no_import_cycle_between_modules():
    """Package `__init__`s only re-export, so they are left out: a cycle through one is a cycle of its modules."""
    graph = {m: {t for t, _ in imports(m) if t != m and not MODULES[t].name == "__init__.py"} for m in MODULES
             if MODULES[m].name != "__init__.py"}  # fmt: skip
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t) :] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_the_study_imports_outside_a_checkout(tmp_path):
    """The package alone (as pip installs it: no book/, no notebooks/ beside it) imports every module."""
    shutil.copytree(PACKAGE, tmp_path / "congkit", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import congkit, congkit.study, congkit.study.regime, congkit.pipeline, congkit.pipeline.cong; "
            "print(congkit.__file__)")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert run.stdout.strip() == str(tmp_path / "congkit" / "__init__.py"), run.stderr


def test_no_class_is_over_200_lines():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 200:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long
