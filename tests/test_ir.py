"""The integer model: validation, save/load, exact value ranges."""

import itertools
import json

import numpy as np
import pytest

from hwgen import golden, ir


def small_model(seed=0):
    rng = np.random.default_rng(seed)
    return ir.Model("t", (2, 5, 5), 4, 1 / 15, [
        ir.AdderConv2d("c", weight=rng.integers(-8, 8, (3, 2, 3, 3)), padding=1),
        ir.Requant("r", mult=np.array([-5, -3, 6]), bias=np.array([400, 300, 500]), shift=4, out_bits=4),
        ir.MaxPool2d("p"),
        ir.Flatten("f"),
        ir.AdderDense("d", weight=rng.integers(-8, 8, (4, 12))),
        ir.Requant("s", mult=np.array([1, 2, -1, 3]), bias=np.zeros(4, int), shift=0, out_bits=12, relu=False),
    ])


def test_shapes_and_roundtrip(tmp_path):
    m = small_model()
    assert m.shapes() == [(3, 5, 5), (3, 5, 5), (3, 2, 2), (12,), (4,), (4,)]
    m.save(tmp_path)
    m2 = ir.Model.load(tmp_path)
    assert m2.to_json() == m.to_json()
    for a, b in zip(m.layers, m2.layers):
        for k, v in a.arrays().items():
            np.testing.assert_array_equal(v, b.arrays()[k])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.npz"]


def test_value_ranges_are_exact_and_attained():
    """Brute force over every input of a tiny layer: the derived interval is the true one."""
    w = np.array([[-3, 0, 5], [2, 2, 9]])
    layer = ir.AdderDense("d", weight=w)
    lo, hi = layer.out_range(0, 7)
    xs = np.array(list(itertools.product(range(8), repeat=3)))
    y = golden.l1_matrix(xs, w)
    assert (lo, hi) == (y.min(), y.max())
    layer = ir.Dense("m", weight=w)
    lo, hi = layer.out_range(0, 7)
    y = golden.mac_matrix(xs, w)
    assert (lo, hi) == (y.min(), y.max())


@pytest.mark.parametrize("lo,hi,expect", [(0, 0, (1, False)), (0, 255, (8, False)), (0, 256, (9, False)),
                                          (-1, 0, (1, True)), (-128, 127, (8, True)), (-129, 0, (9, True)),
                                          (-3, 200, (9, True))])
def test_bits_for(lo, hi, expect):
    assert ir.bits_for(lo, hi) == expect


def test_csd_is_exact_and_minimal():
    for v in range(-1000, 1000):
        terms = ir.csd(v)
        assert sum(s << p for s, p in terms) == v
        powers = [p for _, p in terms]
        assert all(b - a >= 2 for a, b in zip(powers, powers[1:]))  # non-adjacent form
    assert len(ir.csd(7)) == 2 and len(ir.csd(0b1010101)) == 4


def test_bad_models_are_refused(tmp_path):
    with pytest.raises(ir.ModelError, match="input channels"):
        ir.Model("t", (1, 5, 5), 8, 1.0, [ir.AdderConv2d("c", weight=np.zeros((3, 2, 3, 3), int))])
    with pytest.raises(ir.ModelError, match="integer array"):
        ir.AdderDense("d", weight=np.zeros((3, 2)))
    with pytest.raises(ir.ModelError, match="signed digits"):
        ir.Requant("r", mult=np.array([0b1010101]), bias=np.array([0]), shift=0, max_terms=3)
    m = small_model()
    m.save(tmp_path)
    doc = json.loads((tmp_path / "model.json").read_text())
    doc["layers"][0]["kind"] = "fancy_conv"
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ir.ModelError, match="'fancy_conv' is not supported"):
        ir.Model.load(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ir.ModelError, match="not valid JSON"):
        ir.Model.load(tmp_path)
    with pytest.raises(ir.ModelError, match="no integer model"):
        ir.Model.load(tmp_path / "missing")
    m.save(tmp_path)
    (tmp_path / "model.npz").write_bytes(b"garbage")
    with pytest.raises(ir.ModelError, match="NumPy archive"):
        ir.Model.load(tmp_path)
