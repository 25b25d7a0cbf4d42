"""cocotb simulation of a build folder, on the fixture design (tests/fixtures_hw.py)."""

import json

import pytest

from fixtures_hw import write_build
from hwgen.simulate import SimulationError, format_summary, simulate
from hwgen.sim.testbench import decode_result, pack_pixels


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_build(tmp_path_factory.mktemp("good"), images=40)


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return write_build(tmp_path_factory.mktemp("bad"), error=True, images=8)


def test_decode_and_pack():
    word = (3 << 20) | (0x3FF << 10) | 5  # scores 5, -1, 0 (10 bits), argmax 3 at 30
    assert decode_result(word | (3 << 30), 3, 10, 30, 2) == ([5, -1, 3], 3)
    import numpy as np
    x = np.array([[[1, 2]], [[3, 4]]])  # C=2, H=1, W=2
    assert pack_pixels(x, 4) == [1 | 3 << 4, 2 | 4 << 4]


def test_icarus_passes(good):
    res = simulate(good, "icarus", images=40)
    assert res["status"] == 0 and res["passed"] and not res["mismatches"]
    assert res["received"] == 40 and res["cycles_per_image"] == pytest.approx(17, abs=0.5)
    assert res["accuracy"] == res["golden_accuracy"] < 1.0  # the fixture mislabels image 1
    on_disk = json.loads((good / "sim_icarus.json").read_text())
    assert on_disk["status"] == 0 and on_disk["images_per_s"] > 0
    assert "PASS" in format_summary(res)


def test_icarus_backpressure_passes(good):
    res = simulate(good, "icarus", images=40, backpressure=True, seed=3)
    assert res["status"] == 0 and res["received"] == 40
    assert res["cycles_per_image"] > 18  # the gaps and stalls really happened


def test_mismatch_is_reported(bad):
    res = simulate(bad, "icarus", images=8)
    assert res["status"] == 1 and not res["passed"]
    assert len(res["mismatches"]) == 8
    m = res["mismatches"][0]
    assert m["got"]["scores"][0] == m["expected"]["scores"][0] + 1
    assert m["got"]["scores"][1:] == m["expected"]["scores"][1:]
    assert "FAIL" in format_summary(res)


def test_timeout_fails(good):
    res = simulate(good, "icarus", images=10, max_cycles=50)
    assert res["status"] == 1 and res["timed_out"] and res["received"] < 10


def test_verilator_passes_with_backpressure(good):
    res = simulate(good, "verilator", images=40)
    assert res["status"] == 0 and res["received"] == 40
    res = simulate(good, "verilator", images=40, backpressure=True, seed=5)
    assert res["status"] == 0 and res["received"] == 40


@pytest.mark.slow
def test_verilator_catches_mismatch(bad):
    res = simulate(bad, "verilator", images=4)
    assert res["status"] == 1 and len(res["mismatches"]) == 4


def test_missing_files(tmp_path):
    from hwgen.flow import BuildError

    with pytest.raises(BuildError, match="not an hwgen build folder"):
        simulate(tmp_path, "icarus")
    with pytest.raises(SimulationError, match="unknown simulator"):
        simulate(tmp_path, "modelsim")
