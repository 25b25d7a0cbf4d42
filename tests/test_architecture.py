"""The shape of the code itself: who may know layer kinds, no import circles inside hwgen, and
what the hardware generator may not import.

Read from the source with :mod:`ast` (nothing imported but :mod:`hwgen.ir`, for the kind names)."""

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import hwgen
import hwgen.hw
from hwgen import ir

ROOT = Path(hwgen.__file__).parent

# The one place that may compare layer kinds: the registry (and the IR that names them).
REGISTRY = ("kinds/", "ir.py")

# Modules that still compare kinds, and how often (issue 11 item 2 moves them into hwgen/kinds).
# A module may only go down: lower (or drop) its entry when it does.
STILL_COMPARING = {
    "hw/conv.py": 12, "hw/winograd.py": 1, "sweep.py": 1,
    # The mixed architecture's operator families (`--set kinds=conv,adder,shift,...`): names of
    # PyTorch layer families chosen at training time, before there is an integer model.
    "nn/models.py": 3,
}

# The engines' arithmetic vocabularies (l1/mac, l1/shift/mac, adder/shift/winograd/mac).
ARITHMETIC = {"l1", "mac", "shift", "adder", "winograd"}


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        parts = ["hwgen", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        yield rel, ".".join(parts), path, ast.parse(path.read_text(), filename=str(path))


def _strings(node) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for elt in node.elts for s in _strings(elt)]
    return []


def _names_kind(node) -> bool:
    """``x.kind``, ``getattr(x, "kind", ...)`` or a name like ``KIND`` / ``CONV_KINDS``."""
    if isinstance(node, ast.Attribute):
        numpy_dtype = isinstance(node.value, ast.Attribute) and node.value.attr == "dtype"
        return (node.attr == "kind" and not numpy_dtype) or "KIND" in node.attr
    if isinstance(node, ast.Name):
        return "KIND" in node.id
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
        return any(s == "kind" for arg in node.args[1:2] for s in _strings(arg))
    return False


def kind_comparisons(tree) -> list[int]:
    """Line numbers of the comparisons in ``tree`` that decide by layer kind or arithmetic."""
    kinds = set(ir.layer_kinds()) | ARITHMETIC
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            named = [v for s in sides for v in _strings(s)]
            if any(_names_kind(s) for s in sides) or kinds.intersection(named):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_kind_comparisons_only_in_the_registry():
    found = {rel: kind_comparisons(tree) for rel, _, _, tree in _modules()
             if not rel.startswith(REGISTRY)}
    found = {rel: lines for rel, lines in found.items() if lines}
    new = {rel: lines for rel, lines in found.items() if len(lines) > STILL_COMPARING.get(rel, 0)}
    assert not new, f"layer kinds compared outside hwgen/kinds (module: lines): {new}"
    stale = {rel: len(found.get(rel, [])) for rel, n in STILL_COMPARING.items()
             if len(found.get(rel, [])) < n}
    assert not stale, f"fewer kind comparisons than STILL_COMPARING says, lower it: {stale}"


def test_kind_comparisons_are_seen():
    tree = ast.parse("if layer.kind == 'dense': pass\nx = a in CONV_KINDS\ny = op == 'mac'\n"
                     "z = getattr(l, 'kind', None) != k\nw = a == b\n")
    assert kind_comparisons(tree) == [1, 2, 3, 4]


def _imports(module: str, path: Path, tree, known: set[str]) -> set[str]:
    """hwgen modules that ``module`` imports, at any depth of its code (a lazy import inside
    a function is still a circle)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            subs = {f"{base}.{alias.name}" for alias in node.names}
            # ``from pkg import mod`` reads module ``pkg.mod``; ``pkg`` itself only when a name
            # is not a module of it (a package's __init__ runs first either way, as a parent).
            out |= (subs & known) | ({base} if subs - known else set())
    return {name for name in out if name in known and name != module}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return circles


def test_no_import_circle_inside_hwgen():
    mods = list(_modules())
    known = {module for _, module, _, _ in mods}
    graph = {module: _imports(module, path, tree, known) for _, module, path, tree in mods}
    assert import_circles(graph) == []


def test_import_circles_are_seen():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_circles(graph) == [["a", "b", "c"]]


# test_hw_purity (issue 11 item 6, the flow helper): hwgen.hw imports no test-model generator.

#: What the hardware generator must not depend on: it elaborates an :mod:`hwgen.ir` model.
HW_FORBIDDEN = ("torch", "hwgen.golden", "hwgen.data", "hwgen.nn", "hwgen.quant")

HW_DIR = Path(hwgen.hw.__file__).parent


def _imported(path: Path, package: str) -> set[str]:
    """Absolute names of the modules ``path`` (a module of ``package``) imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in HW_FORBIDDEN)


def test_hw_sources_import_no_torch_golden_or_data():
    bad = {}
    for path in sorted(HW_DIR.glob("*.py")):
        hits = sorted(n for n in _imported(path, "hwgen.hw") if _forbidden(n))
        if hits:
            bad[path.name] = hits
    assert bad == {}


def test_importing_hw_loads_no_torch_golden_or_data():
    mods = [f"hwgen.hw.{m.name}" for m in pkgutil.iter_modules([str(HW_DIR)])]
    code = ("import importlib, json, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert "hwgen.hw.top" in loaded
    assert [m for m in loaded if _forbidden(m)] == []


def test_forbidden_import_is_found(tmp_path):
    """The source check sees relative and function-level imports (it can fail)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from .. import golden\n    from ..data import digits\n")
    assert {"hwgen.golden", "hwgen.data"} <= {n for n in _imported(src, "hwgen.hw") if _forbidden(n)}
