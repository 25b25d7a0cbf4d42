"""The reference documentation (``docs/``, Sphinx) builds without a warning, and its pages
cover what they promise: every module of the package, every ``hwgen`` command, every format."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="the docs build needs Sphinx (pip install -e .[test])")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    """The HTML build of a copy of ``docs/`` (autosummary writes its pages into the source
    folder: the copy keeps the checkout clean), with warnings as errors (``-W``) and every
    reference to an hwgen object checked (``-n``)."""
    tmp = tmp_path_factory.mktemp("docs")
    src = tmp / "src"
    shutil.copytree(ROOT / "docs", src, ignore=shutil.ignore_patterns("_api", "_build"))
    out = tmp / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
           "-d", str(tmp / "doctrees"), str(src), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return out


def test_docs_build_without_warnings(html):
    assert (html / "index.html").is_file()


def test_every_module_has_a_page(html):
    paths = [p.relative_to(ROOT).with_suffix("").parts for p in (ROOT / "hwgen").rglob("*.py")]
    # boards/ and sim/ at the top of the tree are hwgen.boards and hwgen.sim (hwgen/__init__.py
    # maps them).
    paths += [("hwgen", *p.relative_to(ROOT).with_suffix("").parts)
              for top in ("boards", "sim") for p in (ROOT / top).rglob("*.py")]
    # Private modules (a part starting with "_", other than __init__) have no page.
    modules = [".".join(p).removesuffix(".__init__") for p in paths
               if not any(part.startswith("_") and part != "__init__" for part in p)]
    missing = [m for m in modules if not (html / "_api" / f"{m}.html").is_file()]
    assert not missing, f"modules without an API page: {missing}"


def test_every_command_has_a_section(html):
    from hwgen.cli import make_parser

    page = (html / "cli.html").read_text()
    sub = next(a for a in make_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f'id="hwgen-{name}"' in page, f"hwgen {name} is not on the CLI page"
    assert "--fold" in page and "--simulator" in page


def test_formats_page_holds_every_schema(html):
    page = (html / "formats.html").read_text()
    for key in ("hwgen-integer-model", "manifest.json", "hwgen-report", "hwgen-compare"):
        assert key in page, key
