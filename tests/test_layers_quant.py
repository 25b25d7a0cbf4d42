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
    loaded = ir.Model.from_json(q.to_json(), {f"{i}.{k}": v for i, layer in enumerate(q.layers)
                                              for k, v in layer.arrays().items()})
    assert [(p.size, p.stride, p.padding) for p in loaded.layers if p.kind == "maxpool2d"] == \
        [(3, 2, 1), (2, 1, 0)]


def test_old_maxpool_json_still_loads():
    pool = ir.MaxPool2d("p", size=2)
    assert pool.stride == 2 and pool.padding == 0 and pool.to_json() == {"kind": "maxpool2d", "name": "p",
                                                                         "size": 2}
    with pytest.raises(ir.ModelError, match=r"^p: padding 2 is more than half the pool size 3$"):
        ir.MaxPool2d("p", size=3, padding=2)
