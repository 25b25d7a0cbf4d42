"""The integer model: validation, save/load, exact value ranges."""

import itertools
import json
from pathlib import Path

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


def _write_hand_model(directory, weight_name="weight", conv_weight=None, extra=None):
    """A model written by hand, as a user would: JSON manifest plus an .npz with a plain weight
    (format version 1: a chain, the arrays keyed by layer index)."""
    conv_weight = (np.array([[[[1, -2, 0], [4, 0, -1], [0, 8, 0]]], [[[0, 0, 1], [2, 0, 0], [-4, 0, 0]]]])
                   if conv_weight is None else conv_weight)
    doc = {"format": ir.FORMAT, "version": 1, "name": "hand", "input_shape": [1, 4, 4],
           "input_bits": 8, "input_scale": 1 / 255, "classes": [],
           "layers": [{"kind": "shift_conv2d", "name": "conv0", "stride": 1, "padding": 1, "max_shift": 7},
                      {"kind": "requant", "name": "requant0", "shift": 4, "out_bits": 8, "relu": True},
                      {"kind": "flatten", "name": "flatten0"},
                      {"kind": "shift_dense", "name": "dense0", "max_shift": 3},
                      {"kind": "requant", "name": "requant1", "shift": 0, "out_bits": 16, "relu": False}]}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.json").write_text(json.dumps(doc))
    arrays = {f"0.{weight_name}": conv_weight, "1.mult": np.array([3, 5]), "1.bias": np.array([8, 8]),
              "3.weight": np.array([[1, 0, -8] * 10 + [2, 2], [0, 4, 1] * 10 + [-1, 0]]),
              "4.mult": np.array([1, 1]), "4.bias": np.array([0, 0]), **(extra or {})}
    np.savez(directory / "model.npz", **arrays)
    return directory


def test_hand_written_shift_layers_given_as_weight(tmp_path):
    m = ir.Model.load(_write_hand_model(tmp_path / "ok"))
    conv, dense = m.layers[0], m.layers[3]
    assert (conv.kind, conv.max_shift, dense.max_shift) == ("shift_conv2d", 7, 3)
    np.testing.assert_array_equal(conv.weight, [[[[1, -2, 0], [4, 0, -1], [0, 8, 0]]],
                                                [[[0, 0, 1], [2, 0, 0], [-4, 0, 0]]]])
    np.testing.assert_array_equal(conv.shift[0, 0], [[0, 1, 0], [2, 0, 0], [0, 3, 0]])
    x = np.random.default_rng(0).integers(0, 256, (4, 1, 4, 4))
    # Saved again, it holds sign and shift, and computes the same.
    again = ir.Model.load(m.save(tmp_path / "again"))
    with np.load(tmp_path / "again" / "model.npz") as data:
        assert {"conv0.sign", "conv0.shift", "dense0.sign", "dense0.shift"} <= set(data.files)
        assert "conv0.weight" not in data.files
    np.testing.assert_array_equal(golden.run(m, x).scores, golden.run(again, x).scores)


def test_hand_written_non_power_of_two_is_refused(tmp_path):
    bad = np.zeros((2, 1, 3, 3), dtype=np.int64)
    bad[1, 0, 2, 1] = 3
    with pytest.raises(ir.ModelError) as e:
        ir.Model.load(_write_hand_model(tmp_path / "a", conv_weight=bad))
    assert str(e.value) == "conv0: weight[1, 0, 2, 1] = 3 is not a signed power of two (0 or ±2**p, 0 <= p <= 7)"
    big = np.zeros((2, 1, 3, 3), dtype=np.int64)
    big[0, 0, 0, 0] = -256
    with pytest.raises(ir.ModelError, match=r"conv0: weight\[0, 0, 0, 0\] = -256 .*raise max_shift to 8"):
        ir.Model.load(_write_hand_model(tmp_path / "b", conv_weight=big))
    with pytest.raises(ir.ModelError, match=r"conv0\.weight: expected an integer array, got dtype float64"):
        ir.Model.load(_write_hand_model(tmp_path / "c", conv_weight=np.full((2, 1, 3, 3), 0.5)))
    with pytest.raises(ir.ModelError, match=r"layer 0 \(shift_conv2d\): the .npz gives both 'weight' and 'sign'"):
        ir.Model.load(_write_hand_model(tmp_path / "d", extra={"0.sign": np.ones((2, 1, 3, 3), int)}))
    with pytest.raises(ir.ModelError, match=r"layer 0 \(shift_conv2d\): array 'sign' missing from the .npz "
                                            r"\(or give 'weight'\)"):
        ir.Model.load(_write_hand_model(tmp_path / "e", weight_name="wrong"))


def test_abs_diff_range_is_the_exact_interval():
    w = np.array([[-3, 0, 2, 9]])
    lo, hi = np.array([[-1]]), np.array([[4]])
    tmin, tmax = ir.abs_diff_range(w, lo, hi)
    xs = np.arange(-1, 5)[:, None, None]
    assert (tmin == np.abs(xs - w).min(axis=0)).all()
    assert (tmax == np.abs(xs - w).max(axis=0)).all()


# --------------------------------------------------------------------------- saved formats

V1 = Path(__file__).parent / "data" / "model_v1"


def test_a_model_written_by_format_version_1_still_loads():
    """tests/data/model_v1 was written by hwgen before the graph IR (format version 1, arrays
    keyed by layer index); it loads, and its golden outputs are the recorded ones bit for bit."""
    assert json.loads((V1 / "model.json").read_text())["version"] == 1
    model = ir.Model.load(V1)
    # Every kind of its time (the add, the sum pools and the shortcut came later).
    later = {"add", "sumpool2d", "global_sumpool2d", "subsample_pad"}
    assert {layer.kind for layer in model.layers} == set(ir.layer_kinds()) - later
    expected = np.load(V1 / "expected.npz")
    result = golden.run(model, expected["x"])
    for i, out in enumerate(result.layers):
        assert np.array_equal(out, expected[f"out{i}"]), model.layers[i].name


# --------------------------------------------------------------------------- the graph

def residual_model(**changes):
    """conv → requant → (skip) conv → requant → add(the two requants) → flatten → dense."""
    rng = np.random.default_rng(3)

    def rq(name, inputs=()):
        return ir.Requant(name, mult=np.array([1, -1]), bias=np.array([40, 90]), shift=3,
                          out_bits=6, inputs=inputs)

    nodes = {
        "c1": ir.AdderConv2d("c1", weight=rng.integers(-8, 8, (2, 1, 3, 3)), padding=1,
                             inputs=(ir.INPUT,)),
        "r1": rq("r1", ("c1",)),
        "c2": ir.AdderConv2d("c2", weight=rng.integers(-8, 8, (2, 2, 3, 3)), padding=1,
                             inputs=("r1",)),
        "r2": rq("r2", ("c2",)),
        "sum": ir.Add("sum", out_bits=7, inputs=("r1", "r2")),
        "f": ir.Flatten("f", inputs=("sum",)),
        "d": ir.Dense("d", weight=rng.integers(-3, 4, (3, 32)), inputs=("f",)),
    }
    nodes.update(changes)
    order = ["d", "f", "sum", "r2", "c2", "r1", "c1"]  # any order: the graph decides
    return ir.Model("res", (1, 4, 4), 4, 1 / 15, [nodes[k] for k in order if nodes[k]],
                    output="d")


def test_a_residual_graph_runs_in_topological_order_with_exact_ranges():
    model = residual_model()
    assert not model.is_chain
    names = [model.layers[i].name for i in model.order()]
    assert names.index("sum") > max(names.index("r1"), names.index("r2"))
    x = np.random.default_rng(0).integers(0, 16, (64, 1, 4, 4))
    res = golden.run(model, x)  # checks every tensor against its derived range
    by = {layer.name: out for layer, out in zip(model.layers, res.layers)}
    np.testing.assert_array_equal(by["sum"], np.clip(by["r1"] + by["r2"], 0, 127))
    np.testing.assert_array_equal(res.scores, by["d"])
    ranges = dict(zip([layer.name for layer in model.layers], model.value_ranges()))
    r1, r2 = ranges["r1"], ranges["r2"]
    assert ranges["sum"] == (max(0, r1[0] + r2[0]), min(127, r1[1] + r2[1]))


def test_a_graph_saves_as_version_2_and_loads(tmp_path):
    model = residual_model()
    model.save(tmp_path)
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["version"] == 2 and doc["output"] == "d"
    assert {layer["name"]: layer["inputs"] for layer in doc["layers"]}["sum"] == ["r1", "r2"]
    with np.load(tmp_path / "model.npz") as data:
        assert {"c1.weight", "r1.mult", "d.weight"} <= set(data.files)
    again = ir.Model.load(tmp_path)
    x = np.random.default_rng(1).integers(0, 16, (8, 1, 4, 4))
    np.testing.assert_array_equal(golden.run(again, x).scores, golden.run(model, x).scores)


def test_a_chain_saved_by_this_version_reads_the_layer_before():
    model = small_model()
    assert model.is_chain
    assert model.inputs_of()[:2] == [(ir.INPUT,), ("c",)]


@pytest.mark.parametrize("changes, message", [
    ({"c1": ir.AdderConv2d("c1", weight=np.zeros((2, 1, 3, 3), int), padding=1,
                           inputs=("r2",))}, r"read each other in a cycle"),
    ({"sum": ir.Add("sum", out_bits=7, inputs=("r1", "nope"))},
     r"layer 'sum' reads tensor 'nope', which no layer computes"),
    ({"sum": ir.Add("sum", out_bits=7, inputs=("r1", "r1"))},
     r"the output of layer 'r2' is never read \(a dangling output\)"),
    ({"sum": ir.Add("sum", out_bits=7, inputs=("r1",))},
     r"'sum' \(add\) reads 1 tensors, it takes 2"),
    ({"c2": ir.AdderConv2d("c2", weight=np.zeros((2, 2, 3, 3), int), inputs=("r1",))},
     r"sum: adds tensors of shapes \(2, 4, 4\) and \(2, 2, 2\)"),
])
def test_graph_validation_refuses_in_one_line(changes, message):
    with pytest.raises(ir.ModelError, match=message) as e:
        residual_model(**changes)
    assert "\n" not in str(e.value)


def test_the_hardware_refuses_a_graph_in_one_line():
    from hwgen.hw.top import Accelerator
    with pytest.raises(ir.ModelError, match="is a graph, not a chain"):
        Accelerator(residual_model())
