"""Layering rules of the package, checked on the source and on a fresh interpreter."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import hwgen.hw

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
