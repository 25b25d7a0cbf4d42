"""cocotb on the generated Verilog of DeepShift and ShiftAddNet accelerators, on Icarus and
Verilator, compared with hwgen.golden through the build folder's vectors."""

import pytest

from hwgen.flow import build
from hwgen.testmodels import random_digits_model
from hwgen.simulate import simulate


@pytest.fixture(scope="module", params=["shift", "shiftadd"])
def built(request, tmp_path_factory):
    model = random_digits_model(seed=3, kind=request.param)
    out = tmp_path_factory.mktemp(request.param) / "build"
    # conv1 at full parallelism with its shifts folded into the logic: the const path too.
    manifest = build(model, out, folding={"conv1": {"pe": 8, "simd": 9, "weights": "const"}})
    lanes = [e.get("lane") for e in manifest["engines"] if "lane" in e]
    assert "shift" in lanes and (request.param == "shift") == ("l1" not in lanes)
    return out


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_shift_models_are_bit_exact(built, simulator, request):
    if simulator == "verilator" and "shiftadd" not in request.node.callspec.id:
        # A Verilator build takes about a minute: the default tier builds the ShiftAddNet,
        # which has every lane kind of the DeepShift model and more.
        if not request.config.getoption("--runslow"):
            pytest.skip("slow tier: run with --runslow")
    res = simulate(built, simulator, images=6, backpressure=simulator == "icarus", seed=1)
    assert res["status"] == 0 and res["passed"] and not res["mismatches"], res.get("mismatches")
    assert res["received"] == 6 + res["directed"]
