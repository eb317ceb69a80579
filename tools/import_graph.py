"""The import graph of tvm_spinn: no cycles between modules, and each stage package imports
only earlier stages and the shared modules.

    python tools/import_graph.py [--json]

Reads every module's imports with ``ast`` (module level and inside functions, relative
and absolute), without importing anything. Prints each stage with the stages it imports
and exits 1 if a module import cycle exists or a stage imports a later one.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tvm_spinn"
# The flow, in order: a stage may import the stages before it.
STAGES = ("frontend", "partition", "graph", "quantization", "tiling", "machine", "program", "codegen", "runtime",
          "report")
# Shared by every stage (and importing no stage).
SHARED = ("errors", "serialization", "kernels", "_native", "zoo", "progress", "hooks")
# Users of the whole package outside the flow (no stage imports them).
USERS = ("fuzz", "board_double", "cli", "torch_model", "__main__")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "_lib" not in p.parts}


def imports_of(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The tvm_spinn modules ``name`` imports (``from x import y`` counts y when y is a module)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            subs = [f"{stem}.{a.name}" for a in node.names if f"{stem}.{a.name}" in known]
            # ``from pkg import submodule`` needs the submodule (its package is its parent anyway)
            targets = subs if subs else [stem]
        else:
            continue
        for t in targets:
            if t in known:
                found.add(t)
    found.discard(name)
    return found


def stage_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "tvm_spinn"


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def check() -> dict:
    """{"stages": {stage: [stages it imports]}, "cycles": [...], "violations": [...]}."""
    mods = modules()
    graph = {n: imports_of(n, p, set(mods)) for n, p in mods.items()}
    # A package's __init__ importing its own submodules is how packages re-export.
    deps: Dict[str, Set[str]] = {}
    violations = []
    for n, targets in graph.items():
        s = stage_of(n)
        for t in targets:
            ts = stage_of(t)
            if ts == s or ts == "tvm_spinn":
                continue
            deps.setdefault(s, set()).add(ts)
            if ts in USERS and s not in USERS:
                violations.append(f"{n} imports {t}, which uses the whole package")
                continue
            if ts in SHARED or s in USERS:
                continue
            if s in SHARED:
                violations.append(f"{n} (shared) imports the stage module {t}")
            elif s in STAGES and ts in STAGES and STAGES.index(ts) > STAGES.index(s):
                violations.append(f"{n} ({s}) imports {t} of the later stage {ts}")
    # The top-level package imports everything (it is the public API); leave it out of cycles.
    module_graph = {n: {t for t in ts if t != "tvm_spinn"} for n, ts in graph.items() if n != "tvm_spinn"}
    return {"stages": {s: sorted(deps.get(s, ())) for s in STAGES + SHARED + USERS},
            "cycles": cycles(module_graph), "violations": violations}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    result = check()
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for s, deps in result["stages"].items():
            print(f"{s:13s} imports {', '.join(deps) if deps else '-'}")
        print(f"module import cycles: {len(result['cycles'])}" + "".join(f"\n  {c}" for c in result["cycles"]))
        print(f"stage order violations: {len(result['violations'])}"
              + "".join(f"\n  {v}" for v in result["violations"]))
    return 1 if result["cycles"] or result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
