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
