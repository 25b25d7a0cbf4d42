"""The shipped Winograd-AdderNet (hwgen/models/digits_winograd-adder.pt) end to end: its F(2×2, 3×3)
tile engines in cocotb on Icarus and Verilator, compared with hwgen.golden through the build
folder; a corrupted ``u`` caught; synthesis for the iCE40 UP5K and the ECP5-25F, per engine; the
command line's folding of Winograd layers (pe and overlap only)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hwgen import golden, ir
from hwgen.flow import build, load_model
from hwgen.nn.checkpoint import embedded_checkpoint
from hwgen.simulate import simulate
from hwgen.synth import format_summary, synthesize

CHECKPOINT = embedded_checkpoint("winograd-adder")
WINOGRAD = "winograd_adder_conv2d"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The shipped model quantized and built once for the module, default folding."""
    model = load_model(CHECKPOINT)
    out = tmp_path_factory.mktemp("winograd") / "build"
    manifest = build(model, out)
    kinds = {e["name"]: e["kind"] for e in manifest["engines"]}
    assert kinds["conv0"] == kinds["conv1"] == WINOGRAD and kinds["dense0"] == "adder_dense"
    assert manifest["golden_accuracy"] >= 0.95
    return out


def _manifest(build_dir):
    return json.loads((build_dir / "manifest.json").read_text())


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_winograd_model_is_bit_exact(built, simulator):
    # 6 images, as test_sim_shift: the Verilator build (up to a minute) is the cost, not the run.
    res = simulate(built, simulator, images=6, backpressure=simulator == "icarus", seed=1)
    assert res["status"] == 0 and res["passed"] and not res["mismatches"], res.get("mismatches")
    assert res["received"] == 6 + res["directed"] and not res["timed_out"]
    if simulator == "verilator":  # no stalls: the engines keep the pace the manifest states
        m = _manifest(built)
        images = 6 + res["directed"]
        assert res["cycles"] <= images * m["cycles_per_image"] + m["latency_cycles"]


def _corrupted(built, bad, layer_name, index, delta, n):
    """A copy of ``built`` whose integer model (the golden side of the comparison) has one ``u``
    of ``layer_name`` moved by ``delta``; the Verilog keeps the original in its ROM.  Returns the
    original and the corrupted golden results of the first ``n`` images and the images whose
    scores the change moves."""
    shutil.copytree(built, bad, ignore=shutil.ignore_patterns("sim", "synth", "sim_*.json", "report.json"))
    original = ir.Model.load(built)
    model = ir.Model.load(bad)
    layer = next(layer for layer in model.layers if layer.name == layer_name)
    assert layer.kind == WINOGRAD
    layer.u[index] += delta
    model.save(bad)
    with np.load(bad / "vectors.npz") as v:
        x = v["x"][:n]
    want, wrong = golden.run(original, x), golden.run(model, x)
    moved = [i for i in range(n) if not np.array_equal(want.scores[i], wrong.scores[i])]
    assert moved, "the corruption does not reach the scores of these images; pick another u"
    return want, wrong, moved


def test_corrupted_u_is_caught(built, tmp_path):
    """Mismatches exactly on the images whose golden scores the corrupted ``u`` moves, the
    hardware giving the original model's scores."""
    n = 6
    want, wrong, moved = _corrupted(built, tmp_path / "bad", "conv1", (3, 5, 1, 2), 300, n)
    res = simulate(tmp_path / "bad", "icarus", images=n)
    assert res["status"] == 1 and not res["passed"] and res["received"] == n + res["directed"]
    images = [m for m in res["mismatches"] if "index" in m]  # the directed vectors go first
    assert [m["index"] for m in images] == moved
    for m in images:
        assert m["got"]["scores"] == want.scores[m["index"]].tolist()
        assert m["expected"]["scores"] == wrong.scores[m["index"]].tolist()


@pytest.mark.slow
def test_verilator_catches_corrupted_u(built, tmp_path):
    n = 4
    _, _, moved = _corrupted(built, tmp_path / "bad", "conv0", (2, 0, 2, 1), -400, n)
    res = simulate(tmp_path / "bad", "verilator", images=n)
    assert res["status"] == 1 and res["received"] == n + res["directed"]
    assert [m["index"] for m in res["mismatches"] if "index" in m] == moved


def _check_synth(r, device):
    print(format_summary(r))  # shown with -s / on failure: the numbers of this run
    assert r["device"] == device and r["hierarchy"] == "engines"
    assert r["luts"] > 0 and r["ffs"] > 0 and r["carry"] > 0
    assert 0 < r["logic_cells"] <= r["logic_cells_available"]
    assert r["fmax_mhz"] > 0 and r["critical_paths"] and r["critical_paths"][0]["delay_ns"] > 0
    mods = r["modules"]
    assert {"conv0", "conv1", "pool0", "pool1", "dense0", "argmax"} <= set(mods)
    assert all(mods[k]["luts"] > 0 and mods[k]["ffs"] > 0 for k in ("conv0", "conv1", "dense0"))
    for key in ("luts", "ffs", "carry", "brams"):
        assert sum(m[key] for m in mods.values()) == r[key]
    # The two Winograd engines are the bulk of the design.
    assert mods["conv0"]["luts"] > mods["dense0"]["luts"] and mods["conv1"]["luts"] > mods["dense0"]["luts"]


def test_synth_ice40_up5k(built):
    r = synthesize(built, "ice40-up5k", seed=1)
    _check_synth(r, "ice40-up5k")
    assert r["logic_cells_available"] == 5280 and r["brams"] <= 30 and r["dsps"] == 0
    assert (built / "synth/ice40-up5k/design.bin").stat().st_size > 1000
    merged = json.loads((built / "report.json").read_text())["synth"]["ice40-up5k"]
    assert merged["luts"] == r["luts"] and merged["modules"]["conv1"] == r["modules"]["conv1"]


@pytest.mark.slow
def test_synth_ecp5_25f(built):
    # 50 s to 2 min here, nextpnr-ecp5 most of it and slowed most by a busy machine: the slow
    # tier (the default tier synthesizes for the UP5K above; test_cli, the adder model for ECP5).
    r = synthesize(built, "ecp5-25f", seed=1, bitstream=False)
    _check_synth(r, "ecp5-25f")
    assert r["logic_cells_available"] == 24288 and r["lut4_equivalent"] == r["luts"] + 2 * r["carry"]
    assert r["lut4_equivalent"] <= 24288 and r["brams"] <= 56


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_whole_test_set_bit_exact(built, simulator):
    res = simulate(built, simulator, images=None, seed=2)
    assert res["status"] == 0 and res["passed"] and not res["mismatches"], res.get("mismatches")[:3]
    assert res["images"] == 360 and res["received"] == 360 + res["directed"]
    assert res["accuracy"] == res["golden_accuracy"] >= 0.95
    m = _manifest(built)
    assert res["cycles"] <= 360 * m["cycles_per_image"] + m["latency_cycles"]


# --------------------------------------------------------------------------- command line

def hwgen(*args):
    return subprocess.run([sys.executable, "-m", "hwgen.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=1800)


def assert_user_error(proc, text):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hwgen: error: ") and text in lines[0], lines[0]


def test_cli_folds_winograd_layers_by_pe_and_overlap_only(tmp_path):
    """``--fold`` on a Winograd layer: pe and overlap build, and simulate bit-exact (pe 2 with
    the second tile buffer, whatever the default folding picks); simd and weights are one-line
    errors leaving nothing behind, as overlap on a direct engine is."""
    out = tmp_path / "pe2"
    proc = hwgen("build", CHECKPOINT, "--out", out, "--fold", "conv1=pe:2,overlap:1")
    assert proc.returncode == 0, proc.stderr
    manifest = _manifest(out)
    conv1 = next(e for e in manifest["engines"] if e["name"] == "conv1")
    assert conv1["kind"] == WINOGRAD and (conv1["pe"], conv1["overlap"]) == (2, 1)
    assert manifest["folding_overrides"] == {"conv1": {"pe": 2, "overlap": 1}}
    proc = hwgen("sim", out, "--simulator", "icarus", "--images", "2", "--backpressure")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((out / "sim_icarus.json").read_text())["mismatches"] == []

    for fold, text in (("conv1=simd:9", "folding of 'conv1': unknown keys ['simd']; use 'pe', 'overlap'"),
                       ("conv1=weights:const", "folding of 'conv1': unknown keys ['weights']; use 'pe', "),
                       ("dense0=overlap:1", "folding of 'dense0': unknown keys ['overlap']; use 'pe', 'simd', "
                                            "'weights'")):
        bad = tmp_path / "bad"
        assert_user_error(hwgen("build", CHECKPOINT, "--out", bad, "--fold", fold), text)
        assert not bad.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pe2"]
