"""hwgen.nn: AdderNet layers (forward, the paper's backward), models, training, checkpoints."""

import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwgen import data
from hwgen.nn import (AdderConv2d, AdderLinear, CheckpointError, build_model, embedded_checkpoint,
                      load_checkpoint, save_checkpoint)
from hwgen.nn.models import archs, default_config
from hwgen.nn.train import evaluate, train


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------- naive references

def naive_conv(x, w, stride, padding):
    x = F.pad(x, (padding,) * 4)
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    y = torch.zeros(n, o, oh, ow, dtype=x.dtype)
    for b in range(n):
        for oc in range(o):
            for i in range(oh):
                for j in range(ow):
                    patch = x[b, :, i * stride:i * stride + k, j * stride:j * stride + k]
                    y[b, oc, i, j] = -(patch - w[oc]).abs().sum()
    return y


def naive_conv_grads(x, w, g, stride, padding):
    """The paper's gradients by loops: dY/dW = X - W, dY/dX = HT(W - X); padding dropped."""
    xp = F.pad(x, (padding,) * 4)
    n, c, h, wd = xp.shape
    o, _, k, _ = w.shape
    gw = torch.zeros_like(w)
    gx = torch.zeros_like(xp)
    for b in range(n):
        for oc in range(o):
            for i in range(g.shape[2]):
                for j in range(g.shape[3]):
                    sl = (slice(None), slice(i * stride, i * stride + k), slice(j * stride, j * stride + k))
                    patch = xp[b][sl]
                    gw[oc] += g[b, oc, i, j] * (patch - w[oc])
                    gx[b][sl] += g[b, oc, i, j] * (w[oc] - patch).clamp(-1, 1)
    if padding:
        gx = gx[:, :, padding:-padding, padding:-padding]
    return gx, gw


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1)])
def test_adder_conv_forward_matches_loops(stride, padding):
    layer = AdderConv2d(3, 4, 3, stride=stride, padding=padding).double()
    x = _rand(2, 3, 6, 5, seed=1)
    got = layer(x)
    want = naive_conv(x, layer.weight.detach(), stride, padding)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want)
    assert (got < 0).all()


def test_adder_linear_forward_matches_loops():
    layer = AdderLinear(7, 3).double()
    x = _rand(5, 7, seed=2)
    w = layer.weight.detach()
    want = torch.tensor([[-(x[n] - w[o]).abs().sum() for o in range(3)] for n in range(5)], dtype=x.dtype)
    torch.testing.assert_close(layer(x), want)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
def test_adder_conv_backward_is_the_papers(stride, padding):
    layer = AdderConv2d(2, 3, 3, stride=stride, padding=padding, eta=None).double()
    with torch.no_grad():
        layer.weight.mul_(0.5)  # so that some |w - x| are below 1 and HardTanh is not all saturated
    x = _rand(2, 2, 5, 5, seed=3).mul(0.7).requires_grad_()
    y = layer(x)
    g = _rand(*y.shape, seed=4)
    y.backward(g)
    gx, gw = naive_conv_grads(x.detach(), layer.weight.detach(), g, stride, padding)
    torch.testing.assert_close(layer.weight.grad, gw)
    torch.testing.assert_close(x.grad, gx)


def test_adder_linear_backward_is_the_papers():
    layer = AdderLinear(4, 3, eta=None).double()
    with torch.no_grad():
        layer.weight.copy_(_rand(3, 4, seed=5) * 0.5)
    x = (_rand(6, 4, seed=6) * 0.5).requires_grad_()
    y = layer(x)
    g = _rand(6, 3, seed=7)
    y.backward(g)
    w = layer.weight.detach()
    diff = x.detach()[:, None, :] - w[None, :, :]                     # (N, O, K): x - w
    torch.testing.assert_close(layer.weight.grad, (g[:, :, None] * diff).sum(0))
    torch.testing.assert_close(x.grad, (g[:, :, None] * (-diff).clamp(-1, 1)).sum(1))
    # The full-precision weight gradient is not sign(x - w): it differs from autograd of |.|.
    w2 = w.clone().requires_grad_()
    (-(x.detach()[:, None, :] - w2).abs().sum(2)).backward(g)
    assert not torch.allclose(w2.grad, layer.weight.grad)


def test_adaptive_learning_rate_scales_weight_gradient():
    x = _rand(8, 2, 4, 4, seed=8)
    g = None
    grads = {}
    for eta in (None, 0.1, 0.3):
        torch.manual_seed(0)
        layer = AdderConv2d(2, 4, 3, padding=1, eta=eta).double()
        y = layer(x)
        g = _rand(*y.shape, seed=9) if g is None else g
        y.backward(g)
        grads[eta] = layer.weight.grad.clone()
    raw = grads[None]
    k = raw.numel()
    for eta in (0.1, 0.3):
        torch.testing.assert_close(grads[eta], raw * eta * math.sqrt(k) / raw.norm())
        assert grads[eta].norm().item() == pytest.approx(eta * math.sqrt(k))
    # Switchable at run time through the attribute.
    layer = AdderLinear(5, 2, eta=0.1).double()
    layer.eta = None
    xl = _rand(3, 5, seed=10)
    layer(xl).sum().backward()
    assert layer.weight.grad.norm().item() != pytest.approx(0.1 * math.sqrt(10))


def test_backward_saves_no_difference_tensor():
    n, c, h, o, k = 4, 3, 6, 5, 3
    layer = AdderConv2d(c, o, k, padding=1)
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        y = layer(torch.rand(n, c, h, h))
    y.sum().backward()
    big = n * o * c * k * k * h * h
    assert sizes and max(sizes) <= big // o  # the unfolded input (N×CKK×L) at most, never N×O×CKK×L
    assert sorted(sizes) == [o * c * k * k, n * c * k * k * h * h]  # exactly: weights and unfolded input


def test_adder_layers_validate_arguments():
    with pytest.raises(ValueError, match="kernel_size"):
        AdderConv2d(1, 2, 0)
    with pytest.raises(ValueError, match="out_features"):
        AdderLinear(3, -1)


# --------------------------------------------------------------------------- models

def test_build_model_adder_structure():
    model = build_model("adder")
    types = [type(m) for m in model]
    assert types == [AdderConv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, AdderConv2d, nn.BatchNorm2d, nn.ReLU,
                     nn.MaxPool2d, nn.Flatten, AdderLinear, nn.BatchNorm1d]
    assert (model[0].in_channels, model[0].out_channels, model[0].padding) == (1, 8, 1)
    assert (model[4].in_channels, model[4].out_channels) == (8, 16)
    assert (model[9].in_features, model[9].out_features) == (64, 10)
    model.eval()
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    small = build_model("adder", channels=[4, 6])
    assert small[9].in_features == 24
    assert "adder" in archs() and default_config("adder")["channels"] == [8, 16]


def test_build_model_errors_are_one_line():
    with pytest.raises(ValueError, match="unknown architecture 'nope'; supported: .*adder") as e:
        build_model("nope")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="no option 'width'"):
        build_model("adder", width=3)


# --------------------------------------------------------------------------- training

def test_train_is_deterministic_and_learns(tmp_path):
    a = train(epochs=3, seed=1, out=tmp_path / "a.pt", progress=False)
    b = train(epochs=3, seed=1, out=tmp_path / "b.pt", progress=False)
    assert a["test_accuracy"] == b["test_accuracy"] and a["epochs"] == 3
    assert a["test_accuracy"] > 0.5  # three epochs already learn (chance is 0.1)
    ma, _ = load_checkpoint(tmp_path / "a.pt")
    mb, info = load_checkpoint(tmp_path / "b.pt")
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert info["metrics"]["test_accuracy"] == a["test_accuracy"]
    with pytest.raises(ValueError, match="unknown option 'lrr'"):
        train(epochs=1, progress=False, lrr=0.1)


def test_training_curves_change_no_weight(tmp_path):
    """``history=True`` records a curve point per epoch and trains the same weights."""
    a = train(epochs=3, seed=1, out=tmp_path / "a.pt", progress=False)
    h = train(epochs=3, seed=1, out=tmp_path / "h.pt", progress=False, history=True)
    assert "history" not in a and [p["epoch"] for p in h["history"]] == [1, 2, 3]
    assert h["history"][-1]["test_accuracy"] == h["test_accuracy"] == a["test_accuracy"]
    assert h["history"][0]["loss"] > h["history"][-1]["loss"] > 0
    ma, _ = load_checkpoint(tmp_path / "a.pt")
    mh, _ = load_checkpoint(tmp_path / "h.pt")
    for va, vh in zip(ma.state_dict().values(), mh.state_dict().values()):
        assert torch.equal(va, vh)


@pytest.mark.slow
def test_full_training_reaches_95_percent(tmp_path):
    m = train(out=tmp_path / "d.pt", progress=False)
    assert m["test_accuracy"] >= 0.95
    assert m["train_time_s"] < 300
    # The embedded checkpoint is reproduced bit for bit by the default recipe.
    mine, _ = load_checkpoint(tmp_path / "d.pt")
    shipped, info = load_checkpoint(embedded_checkpoint())
    assert m["test_accuracy"] == info["metrics"]["test_accuracy"]
    for k, v in shipped.state_dict().items():
        assert torch.equal(v, mine.state_dict()[k]), k


# --------------------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(3)
    model = build_model("adder", channels=[4, 8]).eval()
    x = torch.rand(5, 1, 8, 8)
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, "adder", {"channels": [4, 8]}, {"test_accuracy": 0.5})
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary left behind
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert raw["format"] == "hwgen-checkpoint" and raw["version"] == 1 and raw["arch"] == "adder"
    loaded, info = load_checkpoint(path)
    assert not loaded.training
    torch.testing.assert_close(loaded(x), model(x))
    assert info["config"] == {"channels": [4, 8]} and info["metrics"] == {"test_accuracy": 0.5}


def _one_line_error(path, match):
    with pytest.raises(CheckpointError, match=match) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_errors(tmp_path):
    _one_line_error(tmp_path / "missing.pt", "no such checkpoint")
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01not a torch file at all" * 10)
    _one_line_error(tmp_path / "garbage.pt", "not a readable PyTorch checkpoint")

    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    torch.save({"format": "hwgen-checkpoint", "payload": evil}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(evil, f)
    _one_line_error(tmp_path / "evil.pt", "refuses")
    _one_line_error(tmp_path / "evil.pkl", "not a readable PyTorch checkpoint")
    assert not evil.marker.exists()

    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    _one_line_error(tmp_path / "other.pt", "not an hwgen checkpoint")

    model = build_model("adder")
    save_checkpoint(tmp_path / "ok.pt", model, "adder", {}, {})
    doc = torch.load(tmp_path / "ok.pt", weights_only=True)
    torch.save({**doc, "arch": "transformer"}, tmp_path / "arch.pt")
    _one_line_error(tmp_path / "arch.pt", "unknown architecture 'transformer'")
    torch.save({**doc, "version": 99}, tmp_path / "version.pt")
    _one_line_error(tmp_path / "version.pt", "version 99")
    torch.save({**doc, "config": {"channels": [4, 16]}}, tmp_path / "shape.pt")
    _one_line_error(tmp_path / "shape.pt", "do not fit architecture 'adder'.*expected")
    state = dict(doc["state_dict"])
    state.pop("0.weight")
    torch.save({**doc, "state_dict": state}, tmp_path / "missing_key.pt")
    _one_line_error(tmp_path / "missing_key.pt", "missing '0.weight'")
    torch.save({**doc, "config": {"depth": 3}}, tmp_path / "option.pt")
    _one_line_error(tmp_path / "option.pt", "no option 'depth'")


def test_save_refuses_non_plain_metadata(tmp_path):
    with pytest.raises(TypeError, match="metrics"):
        save_checkpoint(tmp_path / "m.pt", build_model("adder"), "adder", {}, {"f": object()})
    assert not list(tmp_path.iterdir())


def test_embedded_checkpoint():
    path = embedded_checkpoint()
    assert path.name == "digits_adder.pt" and path.stat().st_size < 1_000_000
    assert embedded_checkpoint("adder") == path
    model, info = load_checkpoint(path)
    assert info["arch"] == "adder"
    _, _, x_te, y_te = data.digits()
    acc = evaluate(model, x_te, y_te)
    assert acc >= 0.95
    assert acc == pytest.approx(info["metrics"]["test_accuracy"])


@pytest.mark.parametrize("arch", ["shift", "shiftadd", "conv"])
def test_embedded_checkpoints_of_other_archs(arch):
    path = embedded_checkpoint(arch)
    assert path.name == f"digits_{arch}.pt" and path.stat().st_size < 1_000_000
    model, info = load_checkpoint(path)
    assert info["arch"] == arch  # the default recipe (options added since take their defaults)
    assert {**default_config(arch), **info["config"]} == default_config(arch)
    assert info["metrics"]["seed"] == 0 and info["metrics"]["epochs"] == 100
    _, _, x_te, y_te = data.digits()
    acc = evaluate(model, x_te, y_te)
    assert acc >= 0.95
    assert acc == pytest.approx(info["metrics"]["test_accuracy"])


def test_embedded_checkpoint_unknown_arch():
    for arch in ("transformer", "../adder", ""):
        with pytest.raises(CheckpointError, match="no embedded checkpoint for architecture") as e:
            embedded_checkpoint(arch)
        assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="shipped: adder, conv, shift, shiftadd"):
        embedded_checkpoint("transformer")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["shift", "shiftadd", "conv"])
def test_shipped_checkpoints_are_reproduced(arch, tmp_path):
    """The default recipe with seed 0 gives the shipped weights bit for bit."""
    m = train(arch, seed=0, out=tmp_path / "m.pt", progress=False)
    mine, _ = load_checkpoint(tmp_path / "m.pt")
    shipped, info = load_checkpoint(embedded_checkpoint(arch))
    assert m["test_accuracy"] == info["metrics"]["test_accuracy"]
    for k, v in shipped.state_dict().items():
        assert torch.equal(v, mine.state_dict()[k]), k
