"""The board top-level's link core in cocotb (sim/board.py) on Icarus and Verilator: real test
images of a build in frames over a UART model, every reply against the build's golden scores;
bad CRC, short frame, garbage between frames, frames cut by a host reset and by a board reset."""

import pytest

from board_fixtures import tiny_build
from hwgen import flow, testmodels
from hwgen.boards.bench import simulate_board

CASES = ["images 0..3", "images 4..7", "bad CRC", "good after bad CRC", "short frame",
         "good after short", "cut by a host reset", "good after host reset",
         "good after board reset"]


def check(summary):
    assert [c["case"] for c in summary["cases"]] == CASES
    bad = [c for c in summary["cases"] if not c["ok"]]
    assert summary["passed"] and not bad, bad
    # the accelerator's own cycles, the same for every image: the link's time is not in them
    assert len(set(summary["cycles_per_image"])) == 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_build(tmp_path_factory.mktemp("board") / "tiny")


# Verilator's C++ compile is most of its run (4 min on the loaded 2-core machine): slow tier.
@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)])
def test_board_answers_frames_and_recovers(tiny, simulator):
    check(simulate_board(tiny, simulator, images=8))


def test_board_in_one_clock_domain(tiny):
    check(simulate_board(tiny, "icarus", images=8, accel_domain="sync"))


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_board_with_a_digits_network(tmp_path, simulator):
    build = tmp_path / "digits"
    flow.build(testmodels.random_digits_model(0), build)
    summary = simulate_board(build, simulator, images=8)
    check(summary)
    assert summary["cycles_per_image"][0] > flow.read_manifest(build)["cycles_per_image"]


def test_cocotb_makefile_runs_the_accelerator_testbench(tiny):
    """sim/Makefile: cocotb's own make flow, on the same test module as ``hwgen sim``."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    from hwgen.toolchain import tool_env

    if not shutil.which("make"):
        pytest.skip("make missing")
    root = Path(__file__).resolve().parent.parent
    work = tiny.parent / "make"
    shutil.copytree(root / "sim", work, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**tool_env(), "PYTHONPATH": str(root)}
    env.pop("HWGEN_RESULT", None)
    done = subprocess.run(["make", "-C", str(work), f"BUILD={tiny}", "HWGEN_IMAGES=6"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "FAIL=0" in done.stdout and "PASS=1" in done.stdout
    assert os.path.isfile(work / "results.xml")
