"""Whole networks of the layer shapes beyond the digits nets (stride 2, kernels 1 and 5,
padding 2), built like ``hwgen build`` does and run in cocotb on Icarus (Verilator in the slow
tier), compared with hwgen.golden through the build folder's vectors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hwgen import golden, ir
from hwgen.data import digits
from hwgen.flow import build
from hwgen.simulate import simulate

from test_hw_conv import random_requant


def calibrated_model(name, layers, seed=0, relu_last=False):
    """A digits-shaped (1×8×8, 8-bit) model of ``layers``, where ``None`` stands for a requant
    calibrated on 64 digits (ReLU, 8 bits; the last one signed 12-bit scores)."""
    rng = np.random.default_rng(seed)
    x = np.round(digits()[0][:64] * 255).astype(np.int64)
    out, lo_hi = [], (0, 255)
    for i, layer in enumerate(layers):
        if layer is None:
            last = i == len(layers) - 1
            layer = random_requant(rng, x.shape[1], lo_hi, relu=relu_last or not last,
                                   out_bits=12 if last else 8, negative=True, samples=x)
            layer.name = f"bn{i}"
        out.append(layer)
        x = golden.execute(layer, x)
    return ir.Model(name=name, input_shape=(1, 8, 8), input_bits=8, input_scale=1 / 255, layers=out,
                    classes=[str(i) for i in range(x.shape[1])])


def stride2_model(seed=0, relu_last=False):
    """conv 3×3 stride 2 pad 1 (8×8 → 4×4), shift conv 5×5 stride 2 pad 2 (→ 2×2), a 1×1 mac conv
    stride 2 (→ 1×1), dense."""
    rng = np.random.default_rng(seed + 1)
    sign, shift = rng.integers(-1, 2, size=(8, 6, 5, 5)), rng.integers(0, 6, size=(8, 6, 5, 5))
    return calibrated_model("stride2", [
        ir.AdderConv2d("conv1", weight=rng.integers(-128, 128, size=(6, 1, 3, 3)), stride=2, padding=1),
        None,
        ir.ShiftConv2d("conv2", sign=sign, shift=shift, stride=2, padding=2, max_shift=5),
        None,
        ir.Conv2d("conv3", weight=rng.integers(-8, 8, size=(12, 8, 1, 1)), stride=2),
        None,
        ir.Flatten("flatten"),
        ir.AdderDense("fc", weight=rng.integers(-128, 128, size=(10, 12))),
        None,
    ], seed=seed, relu_last=relu_last)


def test_stride2_model_shapes():
    model = stride2_model()
    assert [s for s in model.shapes()][:6:2] == [(6, 4, 4), (8, 2, 2), (12, 1, 1)]


@pytest.fixture(scope="module")
def stride2_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("stride2") / "build"
    manifest = build(stride2_model(), out)
    strides = {e["name"]: e.get("stride") for e in manifest["engines"]}
    assert strides["conv1"] == strides["conv2"] == strides["conv3"] == 2
    with np.load(out / "vectors.npz") as v:
        assert len(np.unique(v["argmax"])) >= 3  # the scores discriminate: a real test
    return out


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_stride2_model_is_bit_exact(stride2_build, simulator, request):
    if simulator == "verilator" and not request.config.getoption("--runslow"):
        pytest.skip("slow tier: run with --runslow")
    res = simulate(stride2_build, simulator, images=5, backpressure=simulator == "icarus", seed=2)
    assert res["status"] == 0 and res["passed"] and not res["mismatches"], res.get("mismatches")
    assert res["received"] == 5 + res["directed"]


def quantized_build(tmp_path_factory, name, model, lanes=None):
    """``model`` (PyTorch) calibrated and quantized on digits, then built like ``hwgen build``."""
    from test_layers_quant import calibrated, digits_x

    from hwgen.quant import quantize

    x = digits_x()
    calibrated(model, x)
    q = quantize(model, x, name=name, classes=[str(i) for i in range(10)])
    out = tmp_path_factory.mktemp(name) / "build"
    return out, build(q, out, folding=lanes)


def bit_exact(out, images=4):
    res = simulate(out, "icarus", images=images, backpressure=True, seed=3)
    assert res["status"] == 0 and res["passed"] and not res["mismatches"], res.get("mismatches")
    assert res["received"] == images + res["directed"]


def test_window_maxpools_are_bit_exact(tmp_path_factory):
    import torch
    from torch import nn

    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),                                      # 8 → 4
        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.MaxPool2d(2, stride=1),                                                 # 4 → 3
        nn.Flatten(), nn.Linear(54, 10))
    out, manifest = quantized_build(tmp_path_factory, "winpool", model, {"pool1": {"lanes": 2}})
    pools = [e for e in manifest["engines"] if e["kind"] == "maxpool2d"]
    assert [(e["size"], e["stride"], e["padding"], e["op"]) for e in pools] == [(3, 2, 1, "max"),
                                                                               (2, 1, 0, "max")]
    assert pools[1]["lanes"] == 2
    bit_exact(out)


@pytest.mark.parametrize("adder", [False, True], ids=["mac", "adder"])
def test_average_pools_and_clamps_are_bit_exact(tmp_path_factory, adder):
    """Average pools (sums in hardware, no divider), global average pooling, ReLU6 / Hardtanh
    clamps and dropped Dropout / Identity, quantized and built, on Icarus."""
    from torch import nn

    from test_layers_quant import avgpool_net

    model = avgpool_net(adder)
    model[-1] = nn.Linear(6, 10)  # the digits' ten classes
    out, manifest = quantized_build(tmp_path_factory, f"avgpool-{'adder' if adder else 'mac'}", model)
    kinds = [e["kind"] for e in manifest["engines"]]
    assert kinds.count("sumpool2d") == 2 and kinds.count("global_sumpool2d") == 1
    bit_exact(out)


# --------------------------------------------------------------------------- raw outputs

@pytest.fixture(scope="module")
def raw_build(tmp_path_factory):
    """The stride-2 model ending in an unsigned (ReLU) requantizer, built without argmax: its
    ten values are the output, not class scores."""
    out = tmp_path_factory.mktemp("raw") / "build"
    manifest = build(stride2_model(seed=4, relu_last=True), out, argmax=False)
    return out, manifest


def test_raw_output_build(raw_build):
    out, manifest = raw_build
    port = manifest["ports"]["result"]
    assert port["argmax"] is False and port["argmax_bits"] == 0 and not port["score_signed"]
    assert port["payload_width"] == port["classes"] * port["score_bits"]
    assert manifest["golden_accuracy"] is None and manifest["engines"][-1]["kind"] == "raw"
    text = (out / "hwgen_top.v").read_text()
    width = re.search(r"output \[(\d+):0\] result__payload", text)
    assert width and int(width.group(1)) + 1 == port["payload_width"]
    with np.load(out / "vectors.npz") as v:
        assert v["scores"].max() >= 1 << (port["score_bits"] - 1)  # unsigned values past the sign bit


def test_raw_output_is_bit_exact(raw_build):
    out, _ = raw_build
    res = simulate(out, "icarus", images=5, backpressure=True, seed=5)
    assert res["status"] == 0 and res["passed"] and not res["mismatches"], res.get("mismatches")
    assert res["accuracy"] is None and res["golden_accuracy"] is None


def test_raw_output_mismatch_is_caught(raw_build, tmp_path):
    """A golden side whose last requantizer adds one LSB to output 3: the raw comparison catches
    it, in that value only."""
    import shutil

    out, _ = raw_build
    bad = tmp_path / "bad"
    shutil.copytree(out, bad, ignore=shutil.ignore_patterns("sim", "sim_*.json"))
    model = ir.Model.load(bad)
    last = model.layers[-1]
    last.bias[3] += 1 << last.shift
    model.save(bad)
    res = simulate(bad, "icarus", images=4)
    assert not res["passed"] and res["mismatches"]
    for m in res["mismatches"]:
        diff = [j for j, (a, b) in enumerate(zip(m["expected"]["scores"], m["got"]["scores"])) if a != b]
        assert diff == [3] and m["expected"]["scores"][3] == m["got"]["scores"][3] + 1


def test_no_argmax_through_the_cli(raw_build, tmp_path):
    """``hwgen build --no-argmax`` of an integer model folder, then ``hwgen sim``: the raw values
    are compared, no accuracy is claimed."""
    import json

    from test_data import hwgen

    out, _ = raw_build
    proc = hwgen("build", out, "--no-argmax", "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    assert "raw output: 10 values per image, no argmax" in proc.stdout and "accuracy" not in proc.stdout
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["ports"]["result"]["argmax"] is False
    proc = hwgen("sim", tmp_path / "b", "--images", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "accuracy" not in proc.stdout
