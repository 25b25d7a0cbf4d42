"""The registry of layer kinds (hwgen.kinds): each kind defined once, a new kind is one module.

A toy kind registered from this file runs through the model's shapes and ranges, the golden
model, the energy count and save/load without any other module knowing it."""

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from hwgen import energy, golden, ir, kinds
from hwgen.kinds import base


@dataclass
class Negate(kinds.Layer):
    """Toy kind: ``y = offset - x`` elementwise."""

    kind: ClassVar[str] = "toy_negate"
    label: ClassVar[str] = "toy negate"
    offset: int = 0

    def params(self):
        return {"offset": int(self.offset)}

    def out_shape(self, in_shape):
        return in_shape

    def out_range(self, lo, hi):
        return self.offset - hi, self.offset - lo

    def execute(self, x):
        return self.offset - x

    def ops(self, in_shape, out_shape, in_range, out_range):
        return [kinds.Op("add", kinds.base.swidth(*out_range), int(np.prod(out_shape)))]


@pytest.fixture
def toy():
    kinds.register(Negate)
    try:
        yield Negate
    finally:
        base._KINDS.pop(Negate.kind)


def _toy_model():
    rq = ir.Requant("rq", mult=np.array([1]), bias=np.array([0]), shift=0, out_bits=8,
                    relu=False)
    return ir.Model("toy", input_shape=(1, 4, 4), input_bits=4, input_scale=1.0,
                    layers=[Negate("neg", offset=3), rq, ir.Flatten("flat"),
                            ir.Dense("fc", weight=np.array([[1] * 16, [-1] * 16]))])


def test_toy_kind_runs_through_golden_ranges_energy_and_save(toy, tmp_path):
    model = _toy_model()
    assert "toy_negate" in ir.layer_kinds()
    assert model.value_ranges()[0] == (3 - 15, 3)
    x = np.arange(16).reshape(1, 1, 4, 4) % 16
    result = golden.run(model, x)
    assert (result.layers[0] == 3 - x).all()
    assert result.scores.tolist() == [[int((3 - x).sum()), -int((3 - x).sum())]]
    assert energy.op_counts(model)[0]["by_type"]["add"] == 16
    model.save(tmp_path)
    again = ir.Model.load(tmp_path)
    assert isinstance(again.layers[0], Negate) and again.layers[0].offset == 3
    assert (golden.run(again, x).scores == result.scores).all()


def test_a_wrong_range_rule_is_caught_by_the_golden_model(toy):
    class Wrong(Negate):
        def out_range(self, lo, hi):
            return 0, 0

    model = _toy_model()
    model.layers[0] = Wrong("neg", offset=3)
    with pytest.raises(AssertionError, match="derived range"):
        golden.run(model, np.ones((1, 1, 4, 4), dtype=np.int64))


def test_a_kind_name_is_registered_once(toy):
    @dataclass
    class Other(Negate):
        pass

    with pytest.raises(TypeError, match="already Negate"):
        kinds.register(Other)
    with pytest.raises(ir.ModelError, match="kind 'nope' is not supported"):
        kinds.kind_class("nope")


def test_every_builtin_kind_defines_its_parts():
    for cls in kinds.registered():
        assert cls.label, cls.kind
        hooks = (("out_shape", "out_range", "execute", "ops") if cls.arity == 1
                 else ("shape_of", "range_of", "run", "ops_of"))
        for hook in hooks:
            assert getattr(cls, hook) is not getattr(kinds.Layer, hook), (cls.kind, hook)


def test_the_registry_imports_no_torch():
    code = ("import sys, json, hwgen.kinds, hwgen.ir\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'"
            " or m in ('hwgen.golden', 'hwgen.quant', 'hwgen.nn'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# --------------------------------------------------------------------------- subsample_pad

def _option_a_model(stride, before, after):
    """The shortcut alone on a 2×5×5 input, then flatten and a dense layer (a valid model)."""
    sp = kinds.SubsamplePad("sp", stride=stride, pad_before=before, pad_after=after)
    c = 2 + before + after
    h = -(-5 // stride)
    return ir.Model("a", input_shape=(2, 5, 5), input_bits=4, input_scale=1.0,
                    layers=[sp, ir.Flatten("f"),
                            ir.Dense("fc", weight=np.ones((2, c * h * h), dtype=np.int64))])


@pytest.mark.parametrize("stride, before, after", [(1, 0, 0), (2, 1, 1), (2, 0, 2), (3, 2, 0)])
def test_subsample_pad_keeps_every_stride_th_pixel_between_zero_channels(stride, before, after):
    model = _option_a_model(stride, before, after)
    h = -(-5 // stride)
    assert model.shapes()[0] == (2 + before + after, h, h)
    assert model.value_ranges()[0] == (0, 15)
    x = np.random.default_rng(stride).integers(0, 16, (3, 2, 5, 5))
    y = golden.run(model, x).layers[0]
    for c in range(2 + before + after):
        for i in range(h):
            for j in range(h):
                want = x[:, c - before, i * stride, j * stride] if before <= c < 2 + before else 0
                assert (y[:, c, i, j] == want).all(), (c, i, j)
    assert energy.op_counts(model)[0]["ops"] == []


def test_subsample_pad_range_holds_zero_and_it_saves(tmp_path):
    sp = kinds.SubsamplePad("sp", stride=2, pad_before=1, pad_after=1)
    assert sp.out_range(3, 9) == (0, 9) and sp.out_range(-4, -1) == (-4, 0)
    model = _option_a_model(2, 1, 1)
    model.save(tmp_path)
    again = ir.Model.load(tmp_path).layers[0]
    assert isinstance(again, kinds.SubsamplePad)
    assert (again.stride, again.pad_before, again.pad_after) == (2, 1, 1)


@pytest.mark.parametrize("params, message", [
    ({"stride": 0}, r"^sp: stride must be a positive integer, not 0$"),
    ({"stride": True}, r"^sp: stride must be a positive integer, not True$"),
    ({"pad_before": -1}, r"^sp: pad_before must be a non-negative integer, not -1$"),
    ({"pad_after": 1.5}, r"^sp: pad_after must be a non-negative integer, not 1.5$"),
])
def test_subsample_pad_refuses_bad_parameters(params, message):
    with pytest.raises(ir.ModelError, match=message):
        kinds.SubsamplePad("sp", **params)


def test_subsample_pad_refuses_a_flat_input():
    with pytest.raises(ir.ModelError, match=r"^sp: subsamples a C×H×W map, got shape \(8,\)$"):
        kinds.SubsamplePad("sp").out_shape((8,))
