"""The ``mixed`` architecture: one operator family per layer (issue 17, item 1), trained
together, quantized with each kind's scale rule, built as one accelerator and bit-exact."""

import contextlib
import io
import json

import pytest
import torch
from torch import nn

import hwgen
from hwgen import cli
from hwgen.nn import AdderConv2d, AdderLinear, ShiftConv2d, ShiftLinear, build_model
from hwgen.nn.models import MIXED_KINDS
from hwgen.nn.train import train
from hwgen.nn.winograd import WinogradAdderConv2d

LAYER = {"conv": (nn.Conv2d, nn.Linear), "adder": (AdderConv2d, AdderLinear),
         "shift": (ShiftConv2d, ShiftLinear), "winograd-adder": (WinogradAdderConv2d, AdderLinear)}


def weight_layers(model):
    return [m for m in model if isinstance(m, tuple(t for pair in LAYER.values() for t in pair))]


@pytest.mark.parametrize("kinds", ["conv,adder,shift", "winograd-adder,shiftadd,conv",
                                   "shift,winograd-adder,shiftadd", "adder,conv,winograd-adder"])
def test_each_layer_is_the_kind_it_names(kinds):
    names = kinds.split(",")
    model = build_model("mixed", kinds=kinds)
    expected = []
    for i, kind in enumerate(names):
        dense = i == len(names) - 1
        if kind == "shiftadd":
            expected += [LAYER["shift"][dense], LAYER["adder"][dense]]
        else:
            expected.append(LAYER[kind][dense])
    assert [type(m) for m in weight_layers(model)] == expected
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def run_cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("setting, message", [
    ("kinds=adder,conv", "kinds must name 3 layers"),
    ("kinds=adder,mult,conv", "each one of " + ", ".join(MIXED_KINDS)),
    ("kinds=[1,2,3]", "kinds must name 3 layers"),
])
def test_bad_kinds_are_one_line(setting, message, tmp_path):
    code, _, err = run_cli("train", "--arch", "mixed", "--set", setting, "--epochs", "1",
                           "--out", tmp_path / "m.pt")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not list(tmp_path.iterdir())


def test_winograd_block_needs_its_tile_shape():
    with pytest.raises(ValueError, match="block 0 is winograd-adder, which needs kernel 3"):
        build_model("mixed", kinds="winograd-adder,adder,conv", kernel="5,3")


def test_mixed_network_through_the_cli_is_bit_exact(tmp_path):
    code, _, err = run_cli("train", "--arch", "mixed", "--set", "kinds=winograd-adder,shiftadd,conv",
                           "--set", "channels=[4,8]", "--epochs", "1", "--out", tmp_path / "m.pt",
                           "--quiet")
    assert code == 0, err
    code, _, err = run_cli("build", tmp_path / "m.pt", "--out", tmp_path / "b")
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    kinds = [e["kind"] for e in manifest["engines"] if e["name"].startswith(("conv", "dense"))]
    assert kinds == ["winograd_adder_conv2d", "shift_conv2d", "adder_conv2d", "dense"]
    code, out, err = run_cli("sim", tmp_path / "b", "--images", "2")
    assert code == 0 and "PASS" in out, out + err


@pytest.fixture(scope="module")
def mixed_build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mixed")
    train(arch="mixed", epochs=2, progress=False, out=tmp / "m.pt",
          config={"kinds": "shift,adder,winograd-adder", "channels": [4, 8]})
    return hwgen.convert(tmp / "m.pt", out=tmp / "b")


def test_mixed_network_through_the_api_is_bit_exact(mixed_build):
    result = mixed_build.simulate(images=3)
    assert result["passed"] and not result["mismatches"]
    assert mixed_build.accuracy > 0.3


@pytest.mark.slow
def test_mixed_network_is_bit_exact_on_verilator_and_synthesizes(mixed_build):
    result = mixed_build.simulate("verilator", images=5)
    assert result["passed"] and not result["mismatches"]
    report = mixed_build.synthesize("ice40-up5k", freq_mhz=12)  # fits; Fmax is issue 13's
    assert report["timing_met"] and report["lut4_equivalent"] <= report["logic_cells_available"]
