"""The layers beyond the digits nets through the quantizer: overlapping and padded max-pool
(and, below, average pooling and clamps), each checked against the PyTorch model as the
independent float reference of the integer model, and through golden's exact range checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hwgen import data, golden, ir
from hwgen.nn import AdderConv2d
from hwgen.quant import quantize, quantize_input


def calibrated(model: nn.Module, x: np.ndarray) -> nn.Module:
    """``model`` with its BatchNorm statistics those of ``x`` (one pass, cumulative), in eval mode:
    random weights, but activations that a ReLU does not silence."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.as_tensor(x))
    return model.eval()


def digits_x(n=256):
    return np.array(data.digits()[0][:n])


def check_against_float(model: nn.Module, q: ir.Model, x: np.ndarray, tol: float = 0.06):
    """The integer scores, scaled, agree with the float model's within ``tol`` of their peak, and
    pick the same class for almost every image."""
    res = golden.run(q, quantize_input(q, x))  # exact range checks on
    scores = res.scores * q.layers[-1].scale
    with torch.no_grad():
        want = model(torch.as_tensor(x)).numpy()
    peak = np.abs(want).max()
    assert np.abs(scores - want).max() <= tol * peak, (np.abs(scores - want).max(), peak)
    assert (scores.argmax(1) == want.argmax(1)).mean() >= 0.9
    return res


def torch_seed(seed):
    torch.manual_seed(seed)
    return seed


@pytest.mark.parametrize("adder", [False, True], ids=["mac", "adder"])
def test_overlapping_and_padded_maxpool(adder):
    torch_seed(1)
    conv = (lambda i, o: AdderConv2d(i, o, 3, padding=1)) if adder else (
        lambda i, o: nn.Conv2d(i, o, 3, padding=1, bias=False))
    model = nn.Sequential(
        conv(1, 4), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),   # 8 → 4
        conv(4, 6), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2, stride=1),              # 4 → 3
        nn.Flatten(), nn.Linear(54, 5))
    x = digits_x()
    calibrated(model, x)
    q = quantize(model, x, classes=None)
    pools = [layer for layer in q.layers if layer.kind == "maxpool2d"]
    assert [(p.size, p.stride, p.padding) for p in pools] == [(3, 2, 1), (2, 1, 0)]
    assert [s for s, layer in zip(q.shapes(), q.layers) if layer.kind == "maxpool2d"] == [(4, 4, 4), (6, 3, 3)]
    check_against_float(model, q, x)
    loaded = ir.Model.from_json(q.to_json(), {f"{layer.name}.{k}": v for layer in q.layers
                                              for k, v in layer.arrays().items()})
    assert [(p.size, p.stride, p.padding) for p in loaded.layers if p.kind == "maxpool2d"] == \
        [(3, 2, 1), (2, 1, 0)]


def test_old_maxpool_json_still_loads():
    pool = ir.MaxPool2d("p", size=2)
    assert pool.stride == 2 and pool.padding == 0 and pool.to_json() == {"kind": "maxpool2d", "name": "p",
                                                                         "size": 2}
    with pytest.raises(ir.ModelError, match=r"^p: padding 2 is more than half the pool size 3$"):
        ir.MaxPool2d("p", size=3, padding=2)


def _conv(adder):
    return (lambda i, o: AdderConv2d(i, o, 3, padding=1)) if adder else (
        lambda i, o: nn.Conv2d(i, o, 3, padding=1, bias=False))


def avgpool_net(adder, seed=3):
    """Average pool 2×2, average pool 3×3 stride 2 padded, global average pooling, ReLU6 and
    Hardtanh clamps, Dropout and Identity (dropped)."""
    torch_seed(seed)
    conv = _conv(adder)
    return nn.Sequential(
        conv(1, 4), nn.BatchNorm2d(4), nn.ReLU6(), nn.AvgPool2d(2),                     # 8 → 4
        conv(4, 6), nn.BatchNorm2d(6), nn.Hardtanh(0.0, 1.5), nn.Dropout(0.3),
        nn.AvgPool2d(3, stride=2, padding=1),                                           # 4 → 2
        conv(6, 8), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Identity(),  # → 1
        nn.Flatten(), nn.Linear(8, 6), nn.BatchNorm1d(6), nn.Hardtanh(-2.0, 2.0),
        nn.Linear(6, 5))


@pytest.mark.parametrize("adder", [False, True], ids=["mac", "adder"])
def test_average_pools_and_clamps(adder):
    model = avgpool_net(adder)
    x = digits_x()
    calibrated(model, x)
    q = quantize(model, x)
    kinds = [layer.kind for layer in q.layers]
    assert kinds.count("sumpool2d") == 2 and kinds.count("global_sumpool2d") == 1
    pools = [layer for layer in q.layers if layer.kind == "sumpool2d"]
    assert [(p.size, p.stride, p.padding) for p in pools] == [(2, 2, 0), (3, 2, 1)]
    # The divider sits in the scale: the sum's LSB is 1/d of the requantizer's before it.
    for i, layer in enumerate(q.layers):
        if layer.kind in ("sumpool2d", "global_sumpool2d"):
            d = layer.size ** 2 if layer.kind == "sumpool2d" else layer.height * layer.width
            assert q.meta["layer_scales"][i] == pytest.approx(q.meta["layer_scales"][i - 1] / d)
    rqs = [layer for layer in q.layers if layer.kind == "requant"]
    six = round(6.0 / rqs[0].scale)
    assert rqs[0].clamp == (0, min(255, six))
    # A bound at or beyond the calibrated range is the range's end (the scale puts it there),
    # unless the adder weights set a coarser scale.
    assert rqs[1].clamp == (0, min(255, round(1.5 / rqs[1].scale)))
    assert not rqs[3].relu and rqs[3].clamp == (round(-2.0 / rqs[3].scale), round(2.0 / rqs[3].scale))
    assert rqs[3].clamp_lo == -127  # the signed code range is [-128, 127]: Hardtanh's is symmetric
    # An adder net's weights set coarser scales (the l1 rule), five layers deep: a looser bound.
    res = check_against_float(model, q, x, tol=0.12 if adder else 0.06)
    for i, layer in enumerate(q.layers):
        if layer.kind == "requant":
            assert layer.clamp[0] <= res.layers[i].min() and res.layers[i].max() <= layer.clamp[1]


def test_bad_pools_and_clamps_are_refused_in_one_line():
    x = np.random.rand(4, 1, 8, 8)
    for m, text in [(nn.AvgPool2d(2, ceil_mode=True), "AvgPool2d is not supported with these options"),
                    (nn.AvgPool2d(3, padding=1, count_include_pad=False), "count_include_pad"),
                    (nn.AdaptiveAvgPool2d(2), "output_size 2: only 1")]:
        model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), m, nn.Flatten(), nn.Linear(2, 2))
        with pytest.raises(ir.ModelError, match=text) as e:
            quantize(model, x)
        assert "\n" not in str(e.value)
    with pytest.raises(ir.ModelError, match="a ReLU6 must follow a weight layer"):
        quantize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.ReLU6(), nn.Flatten(), nn.Linear(72, 2)), x)


def test_requant_clamp_bounds_are_validated():
    rq = dict(mult=np.array([1]), bias=np.array([0]))
    with pytest.raises(ir.ModelError, match=r"^r: clamp_hi must be an integer in \[0, 255\] or None, not 300$"):
        ir.Requant("r", **rq, clamp_hi=300)
    with pytest.raises(ir.ModelError, match="clamp_lo 9 above clamp_hi 3"):
        ir.Requant("r", **rq, clamp_lo=9, clamp_hi=3)
    r = ir.Requant("r", **rq, relu=False, clamp_lo=-5)
    assert r.clamp == (-5, 127) and r.to_json()["clamp_lo"] == -5 and "clamp_hi" not in r.to_json()
