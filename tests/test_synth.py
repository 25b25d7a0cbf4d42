"""Yosys + nextpnr on the fixture design: real tool outputs, parsed; fit and device errors."""

import dataclasses
import json

import pytest

from fixtures_hw import write_build
from hwgen import synth
from hwgen.synth import DEVICES, SynthError, check_fit, format_summary, synthesize


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return write_build(tmp_path_factory.mktemp("synth"), images=2)


def test_unknown_device(build):
    with pytest.raises(SynthError, match="unknown device 'xc7a35t'; pick one of ice40-hx8k, ice40-up5k"):
        synthesize(build, "xc7a35t")


def test_wrapper_fits_sg48(build):
    manifest = json.loads((build / "manifest.json").read_text())
    assert synth.wrapper_pins(manifest) <= DEVICES["ice40-up5k"].ios
    text = synth.wrapper_verilog(manifest)
    assert "hwgen_top dut" in text and "score_fold <=" in text


def test_ice40_up5k(build):
    r = synthesize(build, "ice40-up5k", seed=1)
    # Parsed from the real stat -json: the fixture has three 10-bit accumulators + argmax.
    assert r["luts"] > 50 and r["carry"] > 10 and r["ffs"] >= 3 * 10 + 8
    assert r["brams"] == 0 and r["dsps"] == 0
    assert r["logic_cells_available"] == 5280 and 0 < r["logic_cells"] <= r["luts"] + r["ffs"]
    assert 10 < r["fmax_mhz"] < 500 and r["critical_paths"]
    assert r["critical_paths"][0]["delay_ns"] > 0
    assert (build / "synth/ice40-up5k/design.bin").stat().st_size > 1000
    on_disk = json.loads((build / "synth/ice40-up5k/report.json").read_text())
    assert on_disk["fmax_mhz"] == r["fmax_mhz"]
    merged = json.loads((build / "report.json").read_text())
    assert merged["synth"]["ice40-up5k"]["luts"] == r["luts"]
    assert "Fmax" in format_summary(r)


def test_ecp5_25f(build):
    r = synthesize(build, "ecp5-25f", seed=1, bitstream=False)
    assert r["luts"] > 30 and r["carry"] > 5 and r["ffs"] >= 38
    assert r["lut4_equivalent"] == r["luts"] + 2 * r["carry"]
    assert r["logic_cells_available"] == 24288 and r["logic_cells"] > 0
    assert r["fmax_mhz"] > 50
    merged = json.loads((build / "report.json").read_text())
    assert set(merged["synth"]) >= {"ecp5-25f"}


def test_too_big_is_caught_before_placement(build, monkeypatch):
    tiny = dataclasses.replace(DEVICES["ice40-up5k"], name="ice40-tiny", luts=64)
    monkeypatch.setitem(DEVICES, "ice40-tiny", tiny)
    with pytest.raises(SynthError, match=r"design needs \d+ logic cells, ice40-tiny has 64; fold more"):
        synthesize(build, "ice40-tiny")
    assert not (build / "synth/ice40-tiny/report.json").exists()


def test_check_fit_counts():
    stat = {"luts": 100, "ffs": 10, "carry": 50, "brams": 0, "dsps": 9, "lut4_equivalent": 200}
    with pytest.raises(SynthError, match="needs 9 DSPs, ice40-up5k has 8"):
        check_fit(stat, DEVICES["ice40-up5k"])
    with pytest.raises(SynthError, match="needs 200 LUTs"):
        check_fit(stat, dataclasses.replace(DEVICES["ecp5-25f"], luts=150))
    check_fit(dict(stat, dsps=0), DEVICES["ice40-hx8k"])


def test_yosys_failure_is_one_line(tmp_path):
    d = write_build(tmp_path, images=1)
    (d / "hwgen_top.v").write_text("module hwgen_top(input clk; endmodule\n")
    with pytest.raises(SynthError, match=r"yosys failed: .*\(log: .*yosys"):
        synthesize(d, "ice40-hx8k")


def _tiny_model():
    """conv (4×1×3×3) → requant → pool → flatten → dense (3×64) → requant on 8×8: four engines."""
    import numpy as np

    from hwgen import ir

    rng = np.random.default_rng(3)
    layers = [
        ir.AdderConv2d("conv0", weight=rng.integers(-8, 8, size=(4, 1, 3, 3)), padding=1),
        ir.Requant("requant0", mult=np.array([-3, -5, -2, -4]), bias=np.array([900, 1500, 600, 1200]),
                   shift=4, out_bits=4, relu=True),
        ir.MaxPool2d("pool0", size=2),
        ir.Flatten("flatten0"),
        ir.AdderDense("dense0", weight=rng.integers(-8, 8, size=(3, 64))),
        ir.Requant("requant1", mult=np.array([-1, -1, -1]), bias=np.array([0, 0, 0]), shift=0,
                   out_bits=10, relu=False),
    ]
    return ir.Model(name="tiny", input_shape=(1, 8, 8), input_bits=4, input_scale=1 / 15, layers=layers,
                    classes=["a", "b", "c"])


def test_per_engine_luts_add_up(tmp_path):
    """Hierarchical synthesis: Yosys keeps one module per engine; the real stat parses into
    per-engine counts that, with the glue, add up to the design totals."""
    from hwgen import flow

    build = tmp_path / "tiny"
    flow.build(_tiny_model(), build)
    r = synthesize(build, "ice40-hx8k", bitstream=False)
    mods = r["modules"]
    assert r["hierarchy"] == "engines"
    assert set(mods) == {"conv0", "pool0", "dense0", "argmax", "(glue)"}
    assert all(mods[k]["luts"] > 0 for k in ("conv0", "pool0", "dense0", "argmax"))
    for key in ("luts", "ffs", "carry", "brams"):
        assert sum(m[key] for m in mods.values()) == r[key]
    assert "per engine: conv0" in format_summary(r)
    merged = json.loads((build / "report.json").read_text())["synth"]["ice40-hx8k"]
    assert merged["modules"]["conv0"] == mods["conv0"]
    flat = synthesize(build, "ice40-hx8k", bitstream=False, hierarchy=False)
    assert flat["hierarchy"] == "flat" and flat["modules"] == {}
