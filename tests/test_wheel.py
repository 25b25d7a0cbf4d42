"""The installed package: a wheel of this tree, installed without its dependencies into a fresh
venv that already has them, runs ``hwgen sim`` (its cocotb testbench ships as hwgen.sim, from
the top-level sim/ folder) and has hwgen.boards (from boards/)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from board_fixtures import tiny_build

ROOT = Path(__file__).resolve().parent.parent


def run(*cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900, **kw)


def _can_build_wheels() -> bool:
    try:
        import setuptools.command.bdist_wheel  # noqa: F401  (setuptools >= 70.1)
        return True
    except ImportError:
        try:
            import wheel  # noqa: F401
            return True
        except ImportError:
            return False


@pytest.mark.slow
@pytest.mark.skipif(not _can_build_wheels(), reason="needs `wheel` (or setuptools >= 70.1)")
def test_hwgen_sim_runs_from_an_installed_wheel(tmp_path):
    run(sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
        "-q", "-w", str(tmp_path / "dist"))
    wheel = next((tmp_path / "dist").glob("hwgen-*.whl"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    # The dependencies: the site-packages folders this interpreter sees, as plain paths (their
    # .pth files, an editable hwgen among them, are not processed from there).
    site = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                .stdout.strip())
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p) != site]
    (site / "zz_deps.pth").write_text("\n".join(deps) + "\n")
    run(str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel))

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(str(python), "-c", "import hwgen, hwgen.sim.testbench, hwgen.boards.link; "
                "print(hwgen.__file__); print(hwgen.sim.testbench.__file__)",
                cwd=tmp_path, env=env).stdout.split()
    assert all(str(site) in w for w in where), where
    build = tiny_build(tmp_path / "tiny")
    sim = subprocess.run([str(venv / "bin" / "hwgen"), "sim", str(build), "--images", "6"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert sim.returncode == 0, sim.stdout + sim.stderr
    assert "PASS, 0 mismatches" in sim.stdout
