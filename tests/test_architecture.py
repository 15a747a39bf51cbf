"""The README's architecture, checked: import-linter's contracts (pyproject.toml) and no import cycle at all.

Imports inside functions count (grimp reads every import statement), so a cycle cannot hide in one.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

grimp = pytest.importorskip("grimp", reason="import-linter is not installed (pip install -r requirements-dev.txt)")


def test_import_linter_contracts_hold():
    exe = Path(sys.executable).with_name("lint-imports")  # the one installed beside this Python
    exe = str(exe) if exe.exists() else shutil.which("lint-imports")
    if exe is None:
        pytest.skip("lint-imports is not installed (pip install -r requirements-dev.txt)")
    r = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "broken" in r.stdout and " 0 broken" in r.stdout


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_among_modules():
    sys.path.insert(0, str(REPO))
    try:
        graph = grimp.build_graph("cloudrm", cache_dir=None)
    finally:
        sys.path.remove(str(REPO))
    mods = {m for m in graph.modules if m == "cloudrm" or m.startswith("cloudrm.")}
    edges = {m: {d for d in graph.find_modules_directly_imported_by(m) if d in mods} for m in mods}
    # the package's __init__ re-exports from its submodules (lazily); those edges point down, never back up
    assert not _cycles(edges), _cycles(edges)


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_importing_every_module_never_imports_gradio():
    code = ("import importlib, pkgutil, sys, cloudrm\n"
            "for m in pkgutil.walk_packages(cloudrm.__path__, 'cloudrm.'):\n"
            "    if not m.name.endswith('__main__'):\n"
            "        importlib.import_module(m.name)\n"
            "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('gradio', 'gradio_client', 'spaces'))\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
