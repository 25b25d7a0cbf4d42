"""Energy estimates: op counts against hand counts, energies against the table, and the VCD
toggle counter on a real waveform of a short cocotb run (Verilator, the fixture design)."""

import json

import numpy as np
import pytest

from fixtures_hw import fixture_model, write_build
from hwgen import energy, ir
from hwgen.energy import HOROWITZ_45NM as T


def hand_model() -> ir.Model:
    """1×4×4 4-bit input → adder conv 2×3×3 → requant (mult 3, 5) → pool 2 → flatten → shift dense 3."""
    w = np.array([[[[1, -3, 4], [0, 2, 2], [1, 1, 0]]], [[[4, 4, 4], [-1, 0, 3], [2, 2, 2]]]])
    conv = ir.AdderConv2d("conv", weight=w)
    # conv output range is negative: bias shifts it back up before the ReLU clamp.
    rq = ir.Requant("rq", mult=np.array([3, 5]), bias=np.array([600, 900]), shift=2, out_bits=4)
    sign = np.array([[1, -1], [0, 1], [-1, -1]])
    shift = np.array([[0, 2], [1, 3], [2, 0]])
    return ir.Model(name="hand", input_shape=(1, 4, 4), input_bits=4, input_scale=1 / 16,
                    layers=[conv, rq, ir.MaxPool2d("pool", size=2), ir.Flatten("flat"),
                            ir.ShiftDense("sd", sign=sign, shift=shift, max_shift=3)])


def ops_of(row):
    return {(o["op"], o["bits"]): o["count"] for o in row["ops"]}


def test_op_counts_match_hand_counts():
    m = hand_model()
    rows = {r["layer"]: r for r in energy.op_counts(m)}
    acc = ir.signed_bits_for(*m.value_ranges()[0])
    # conv: 2×2 output pixels × 2 channels × 9 taps; inputs [0, 15], weights [-3, 4] → diff [-4, 18]: 6 bits.
    assert ops_of(rows["conv"]) == {("absdiff", 6): 72, ("add", acc): 64}
    # requant: 3 = 4 - 1 and 5 = 4 + 1, two digits each, one with a non-zero power;
    # 4 elements per channel: 8 constant shifts, 16 adds (digits + bias), 8 shifts right, 16 compares.
    s = ir.signed_bits_for(*m.layers[1].sum_range(*m.in_ranges()[1]))
    in_bits = ir.bits_for(*m.in_ranges()[1])[0]
    assert ops_of(rows["rq"]) == {("add", s): 16, ("shift", in_bits): 8, ("shift", s): 8, ("compare", s): 16}
    assert ops_of(rows["pool"]) == {("compare", 4): 6}  # 2 outputs × (4 - 1)
    assert rows["flat"]["ops"] == []
    assert ops_of(rows["sd"]) == {("shift", 4): 6, ("add", ir.signed_bits_for(*m.value_ranges()[4])): 3}
    assert rows["conv"]["by_type"] == {"add": 64, "absdiff": 72, "shift": 0, "mult": 0, "compare": 0}


def test_mac_layers_count_multiplications():
    m = fixture_model(channels=1, height=4, width=4, classes=3, bits=4)  # flatten → dense, 0/1 weights
    (flat, dense) = energy.op_counts(m)
    assert flat["ops"] == [] and dense["by_type"]["mult"] == 48 and dense["by_type"]["add"] == 45
    mult = next(o for o in dense["ops"] if o["op"] == "mult")
    assert mult["bits"] == "4x1"  # 4-bit pixels × 1-bit (0/1) weights


def test_table_anchors_and_scaling_rule():
    assert T.energy("add", 8) == 0.03 and T.energy("add", 32) == 0.1
    assert T.energy("mult", 8) == 0.2 and T.energy("mult", 32) == 3.1
    assert (T.energy("shift", 8), T.energy("shift", 16), T.energy("shift", 32)) == (0.024, 0.057, 0.13)
    assert T.energy("add", 16) == pytest.approx(0.03 + 0.07 * 8 / 24)       # linear in width
    assert T.energy("mult", 16) == pytest.approx(0.2 + 2.9 * 192 / 960)      # linear in width²
    assert T.energy("mult", (8, 32)) == pytest.approx(T.energy("mult", 16))  # ∝ a·b
    assert T.energy("add", 4) == pytest.approx(0.015)                         # proportional below
    assert T.energy("add", 64) == pytest.approx(0.2)                          # and above
    assert T.energy("absdiff", 8) == pytest.approx(0.06) and T.energy("compare", 8) == 0.03
    with pytest.raises(ValueError):
        T.energy("divide", 8)
    for op in energy.OP_TYPES:
        assert T.sources[op]  # every constant has its source


def test_energy_total_is_counts_times_table():
    m = hand_model()
    e = energy.op_energy(m)
    expect = 0.0
    for row in energy.op_counts(m):
        for o in row["ops"]:
            bits = o["bits"] if isinstance(o["bits"], int) else tuple(map(int, o["bits"].split("x")))
            expect += o["count"] * T.energy(o["op"], bits)
    assert e["total_pj"] == pytest.approx(expect)
    assert e["total_pj"] == pytest.approx(sum(l["pj"] for l in e["layers"]))
    assert e["total_pj"] == pytest.approx(sum(e["pj_by_op"].values()))
    assert e["estimate"] is True and e["ops_by_type"]["absdiff"] == 72
    text = energy.format_energy(e)
    assert "conv" in text and "horowitz-45nm" in text


def test_kind_without_op_counter_names_the_registry():
    """A kind counts its own ops (``ops`` in its hwgen.kinds module); one without is refused."""
    m = hand_model()

    class Odd(ir.Flatten):
        kind = "unregistered_kind"
        ops = ir.Layer.ops

    class Counted(Odd):
        def ops(self, *shapes_and_ranges):
            return [energy.Op("add", 8, 5)]

    m.layers[3] = Odd("odd")
    with pytest.raises(energy.EnergyError, match="counter.*hwgen.kinds"):
        energy.op_counts(m)
    m.layers[3] = Counted("odd")
    assert energy.op_counts(m)[3]["by_type"]["add"] == 5


# --------------------------------------------------------------------------- VCD, FPGA

@pytest.fixture(scope="module")
def waved(tmp_path_factory):
    if not _has_verilator():
        pytest.skip("Verilator is not installed (see `hwgen doctor`)")
    from hwgen.simulate import simulate

    build = write_build(tmp_path_factory.mktemp("waved"), images=3)
    res = simulate(build, "verilator", images=3, waves=True)
    assert res["status"] == 0
    return build, res


def _has_verilator():
    from hwgen.toolchain import ToolError, require

    try:
        require("verilator")
        return True
    except ToolError:
        return False


def test_vcd_toggles_on_a_cocotb_run(waved):
    build, res = waved
    vcd = build / "sim" / "verilator" / "dump.vcd"
    assert res["waves"] == str(vcd)
    w = energy.vcd_toggles(vcd)
    nets = w["nets"]
    by_ref = {ref: n for n in nets.values() for ref in n["refs"]}
    assert not any(scope.startswith("$rootio") for scope, _ in by_ref)  # Verilator's port copy dropped
    clk = by_ref[("hwgen_top", "clk")]
    assert clk["bits"] == 1 and clk["toggles"] / 2 >= res["cycles"]
    # The pixel payload toggles exactly as the words the testbench drove, one after another.
    from hwgen.sim.testbench import pack_pixels

    with np.load(build / "vectors.npz") as v:
        words = [wd for img in v["x"][:3] for wd in pack_pixels(img, 4)]
    expect = sum(bin(a ^ b).count("1") for a, b in zip([0] + words, words))
    assert by_ref[("hwgen_top", "pixels__payload")]["toggles"] == expect
    assert by_ref[("hwgen_top", "pixels__payload")]["bits"] == 8
    # Each bit is counted once: no net is a field/element view of another in its scope.
    names = {(s, n) for s, n in by_ref}
    assert not any((s, n.split("[")[0]) in names and "[" in n for s, n in names)


def test_fpga_energy_arithmetic(waved, tmp_path):
    build, res = waved
    dev = "ice40-up5k"
    (build / "synth" / dev).mkdir(parents=True, exist_ok=True)
    synth = {"device": dev, "family": "ice40", "luts": 40, "ffs": 30, "logic_cells": 50, "brams": 0,
             "dsps": 0, "fmax_mhz": 100.0, "freq_target_mhz": 24.0}
    (build / "synth" / dev / "report.json").write_text(json.dumps(synth))
    f = energy.fpga_energy(build, dev)
    c = energy.ICE40_UP
    cycles = json.loads((build / "manifest.json").read_text())["cycles_per_image"]
    assert f["estimate"] is True and f["cycles_per_image"] == cycles
    assert f["pj_by_part"]["static"] == pytest.approx(c.static_w.value * cycles / 100e6 * 1e12)
    assert f["pj_by_part"]["clock"] == pytest.approx(c.clock_cycle.value * cycles * 1e12)
    assert f["total_pj"] == pytest.approx(sum(f["pj_by_part"].values()))
    assert f["total_pj"] == pytest.approx(sum(r["pj"] for r in f["engines"]))
    assert sum(r["cells"] for r in f["engines"]) == pytest.approx(50, abs=0.5)
    assert f["pj_by_part"]["logic"] > 0 and all(0 <= r["activity"] <= 1 for r in f["engines"])
    for coef in f["coefficients"].values():
        if isinstance(coef, dict):
            assert coef["source"]
    assert "ice40-up5k" in energy.format_energy(None, f)


def test_fpga_energy_errors_are_one_line(tmp_path):
    build = write_build(tmp_path / "b", images=2)
    with pytest.raises(energy.EnergyError, match="hwgen synth"):
        energy.fpga_energy(build, "ice40-up5k")
    (tmp_path / "x.fst").write_text("")
    with pytest.raises(energy.EnergyError, match="verilator"):
        energy.vcd_toggles(tmp_path / "x.fst")
