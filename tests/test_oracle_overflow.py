"""The oracle cannot wrap: int64 overflow in a derived range is refused with the layer's name."""

import numpy as np
import pytest

from hwgen import golden, ir

BIG, MOST_NEGATIVE = 1 << 62, -(1 << 63)


def _dense_model(layer):
    return ir.Model("t", (1, 1, 2), 4, 1 / 15, [ir.Flatten("f"), layer])


def _run(model):
    x = np.zeros((1,) + model.input_shape, dtype=np.int64)
    return golden.run(model, x)


@pytest.mark.parametrize("layer", [
    ir.AdderDense("wide", weight=np.array([[MOST_NEGATIVE, 0], [1, 2]])),
    ir.AdderDense("wide", weight=np.array([[BIG, BIG], [1, 2]])),
    ir.Dense("wide", weight=np.array([[BIG, 1], [1, 2]])),
])
def test_overflowing_layer_is_refused_by_name(layer):
    model = _dense_model(layer)
    with pytest.raises(ir.ModelError, match=r"^wide: .*does not fit int64"):
        model.value_ranges()
    for check in (True, False):
        with pytest.raises(ir.ModelError, match=r"^wide: "):
            golden.run(model, np.zeros((1, 1, 1, 2), dtype=np.int64), check_ranges=check)


def test_partial_sums_are_bounded_not_only_the_total():
    # rows sum to a small range, but the first product alone is 15 * 2**62: wraps in int64
    model = _dense_model(ir.Dense("mac", weight=np.array([[BIG, -BIG]])))
    with pytest.raises(ir.ModelError, match=r"^mac: "):
        model.value_ranges()


def test_requant_overflow_is_refused_by_name():
    model = ir.Model("t", (1, 1, 2), 4, 1 / 15, [
        ir.Flatten("f"), ir.Dense("d", weight=np.array([[1 << 40, 1], [1, 1]])),
        ir.Requant("rq", mult=np.array([1 << 30, 1]), bias=np.zeros(2, int), max_terms=3)])
    with pytest.raises(ir.ModelError, match=r"^rq: "):
        model.value_ranges()


def test_winograd_overflow_is_refused_by_name():
    bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
    at = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])
    u = np.zeros((2, 1, 4, 4), dtype=np.int64)
    u[0, 0, 0, 0] = MOST_NEGATIVE
    model = ir.Model("t", (1, 4, 4), 4, 1 / 15, [
        ir.WinogradAdderConv2d("wino", u=u, bt=bt, at=at, padding=1),
        ir.MaxPool2d("p", size=4), ir.Flatten("f")])
    with pytest.raises(ir.ModelError, match=r"^wino: .*does not fit int64"):
        model.value_ranges()


def test_uint64_beyond_int64_is_refused_not_cast():
    with pytest.raises(ir.ModelError, match=r"^u\.weight: value 18446744073709551615 does not fit"):
        ir.AdderDense("u", weight=np.array([[2**64 - 1, 0]], dtype=np.uint64))


def test_ranges_at_the_int64_edge_are_still_exact():
    # the largest l1 range that fits is derived exactly and the golden model agrees with it
    w = np.array([[(1 << 61), -(1 << 61)], [0, 0]])
    model = _dense_model(ir.AdderDense("edge", weight=w))
    (lo, hi), = model.value_ranges()[1:]
    assert lo == -((1 << 61) + (1 << 61) + 15) and hi == 0
    scores = _run(model).scores
    assert scores.tolist() == [[-(1 << 62), 0]]


# ----------------------------------------------------------------- hostile checkpoint weights

@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), 1e30])
def test_non_finite_or_absurd_checkpoint_weight_is_one_line(tmp_path, bad):
    import subprocess
    import sys

    import torch

    from hwgen.nn import CheckpointError, embedded_checkpoint, load_checkpoint
    doc = torch.load(embedded_checkpoint(), weights_only=True, map_location="cpu")
    key = next(k for k, v in doc["state_dict"].items() if v.is_floating_point())
    doc["state_dict"][key].view(-1)[3] = bad
    path = tmp_path / "bad.pt"
    torch.save(doc, path)
    with pytest.raises(CheckpointError, match=rf"{key} holds .*must be finite and at most 1e\+09"):
        load_checkpoint(path)
    out = tmp_path / "build"
    r = subprocess.run([sys.executable, "-m", "hwgen.cli", "build", str(path), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not out.exists()
