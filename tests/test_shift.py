"""Shift layers (DeepShift) and ShiftAddNet: PyTorch training forms, integer IR layers (from sign and
shift, or from a power-of-two weight), golden executor, archs, freezing."""

import math

import numpy as np
import pytest
import torch

from hwgen import golden, ir
from hwgen.nn import AdderConv2d, AdderLinear, load_checkpoint
from hwgen.nn.models import archs, build_model, default_config
from hwgen.nn.shift import ShiftConv2d, ShiftLinear, round_power_of_two
from hwgen.nn.train import train


# --------------------------------------------------------------------------- PyTorch layers

def _is_signed_power_of_two(w, pmin, pmax):
    w = w.detach().double()
    nz = w[w != 0].abs()
    p = torch.log2(nz)
    return bool((p == p.round()).all() and (p >= pmin).all() and (p <= pmax).all())


@pytest.mark.parametrize("mode", ["ps", "q"])
@pytest.mark.parametrize("prange", [(-7, 0), (-3, 2)])
def test_forward_uses_only_signed_powers_of_two_in_range(mode, prange):
    torch.manual_seed(0)
    conv = ShiftConv2d(3, 5, 3, padding=1, mode=mode, prange=prange)
    dense = ShiftLinear(20, 4, mode=mode, prange=prange)
    # Push some parameters far outside the range and near zero: still only in-range powers or 0.
    with torch.no_grad():
        for layer in (conv, dense):
            if mode == "q":
                layer.weight.view(-1)[:6] = torch.tensor([100.0, -100.0, 1e-9, 0.0, -2.0 ** (prange[0] - 2), 0.3])
            else:
                layer.shift.view(-1)[:3] = torch.tensor([40.0, -40.0, 0.2])
                layer.sign.view(-1)[:3] = torch.tensor([0.3, -0.7, 5.0])
    for layer in (conv, dense):
        w = layer.effective_weight()
        assert _is_signed_power_of_two(w, *prange)
        s, p = layer.exported()
        assert s.dtype == np.int64 and p.dtype == np.int64 and s.shape == p.shape == tuple(w.shape)
        assert set(np.unique(s)) <= {-1, 0, 1} and p.min() >= prange[0] and p.max() <= prange[1]
        assert (p[s == 0] == prange[0]).all()
        np.testing.assert_array_equal(s * np.exp2(p.astype(float)), w.detach().double().numpy())
    # The forward is the ordinary convolution with the effective weight.
    x = torch.rand(2, 3, 6, 6)
    ref = torch.nn.functional.conv2d(x, conv.effective_weight().detach(), padding=1)
    torch.testing.assert_close(conv(x), ref)


def test_q_rounding_is_nearest_in_value_with_zero_threshold():
    w = torch.tensor([1.0, 1.49, 1.5, 0.75, 0.74, -0.3, 2.0 ** -8, 2.0 ** -8 * 0.99, 3.0, -7.0, 0.0])
    s, p = round_power_of_two(w, -7, 0)
    got = (s * torch.exp2(p)).tolist()
    assert got == [1.0, 1.0, 1.0, 1.0, 0.5, -0.25, 2.0 ** -7, 0.0, 1.0, -1.0, 0.0]


def test_ps_sign_is_ternary():
    layer = ShiftLinear(5, 1, mode="ps")
    with torch.no_grad():
        layer.sign.copy_(torch.tensor([[-1.2, -0.6, -0.4, 0.49, 0.51]]))
        layer.shift.copy_(torch.zeros(1, 5))
    assert layer.effective_weight().tolist() == [[-1.0, -1.0, 0.0, 0.0, 1.0]]


def test_straight_through_gradients():
    torch.manual_seed(1)
    q = ShiftLinear(6, 3, mode="q")
    x = torch.randn(4, 6)
    g = torch.randn(4, 3)
    (q(x) * g).sum().backward()
    torch.testing.assert_close(q.weight.grad, g.t() @ x)  # identity through the rounding

    ps = ShiftLinear(6, 3, mode="ps")
    (ps(x) * g).sum().backward()
    gw = g.t() @ x  # dL/dw
    w = ps.effective_weight().detach()
    s = torch.sign(ps.sign.detach().round())
    p = ps.shift.detach().round().clamp(-7, 0)
    torch.testing.assert_close(ps.shift.grad, gw * w * math.log(2.0))
    torch.testing.assert_close(ps.sign.grad, gw * torch.exp2(p))  # also where s is 0
    assert s.abs().sum() > 0 and ps.shift.grad.abs().sum() > 0


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="mode must be one of ps, q"):
        ShiftLinear(3, 2, mode="x")
    with pytest.raises(ValueError, match="pmin <= pmax"):
        ShiftConv2d(1, 2, 3, prange=(0, -7))
    with pytest.raises(ValueError, match="kernel_size must be an integer >= 1"):
        ShiftConv2d(1, 2, 0)


# --------------------------------------------------------------------------- IR layers

def _shift_arrays(rng, shape, max_shift):
    return {"sign": rng.integers(-1, 2, shape), "shift": rng.integers(0, max_shift + 1, shape)}


def test_ir_validation_errors():
    s = np.ones((2, 3), int)
    with pytest.raises(ir.ModelError, match="sign must be -1, 0 or 1, found 2"):
        ir.ShiftDense("d", sign=s * 2, shift=s)
    with pytest.raises(ir.ModelError, match="shift must be >= 0"):
        ir.ShiftDense("d", sign=s, shift=-s)
    with pytest.raises(ir.ModelError, match=r"sign has shape \(2, 3\) but shift has \(3, 2\)"):
        ir.ShiftDense("d", sign=s, shift=s.T)
    with pytest.raises(ir.ModelError, match="shift 16 exceeds max_shift=15"):
        ir.ShiftDense("d", sign=s, shift=s * 16)
    ir.ShiftDense("d", sign=s, shift=s * 16, max_shift=16)
    with pytest.raises(ir.ModelError, match=r"max_shift must be an integer in \[0, 30\]"):
        ir.ShiftDense("d", sign=s, shift=s, max_shift=31)
    with pytest.raises(ir.ModelError, match="expected an integer array"):
        ir.ShiftDense("d", sign=s * 1.0, shift=s)
    with pytest.raises(ir.ModelError, match="expected 4 dimensions"):
        ir.ShiftConv2d("c", sign=s, shift=s)
    with pytest.raises(TypeError):
        ir.ShiftDense("d", weight=s, sign=s, shift=s)  # the weight is derived, not given
    assert "\n" not in str(pytest.raises(ir.ModelError, ir.ShiftDense, "d", sign=s * 2, shift=s).value)


def test_from_weight_splits_signed_powers_of_two():
    rng = np.random.default_rng(4)
    sign, shift = _shift_arrays(rng, (3, 2, 3, 3), 7).values()
    w = sign << shift
    layer = ir.ShiftConv2d.from_weight("conv0", w, max_shift=7, padding=1, stride=2)
    assert (layer.padding, layer.stride, layer.max_shift) == (1, 2, 7)
    np.testing.assert_array_equal(layer.weight, w)
    np.testing.assert_array_equal(layer.sign, np.sign(w))
    np.testing.assert_array_equal(layer.shift[w != 0], shift[w != 0])
    assert (layer.shift[w == 0] == 0).all()
    dense = ir.ShiftDense.from_weight("d", np.array([[0, 1, -1, 2, -128, 1 << 30]]), max_shift=30)
    assert dense.shift.tolist() == [[0, 0, 0, 1, 7, 30]] and dense.sign.tolist() == [[0, 1, -1, 1, -1, 1]]


@pytest.mark.parametrize("value,index,hint", [(3, (3, 0, 1, 2), ""), (-6, (0, 1, 2, 0), ""),
                                               (256, (2, 1, 0, 0), "; raise max_shift to 8"),
                                               (-(1 << 62), (1, 0, 0, 1), "; raise max_shift to 62"),
                                               (np.iinfo(np.int64).min, (0, 0, 0, 0), "")])
def test_from_weight_refuses_non_powers_of_two(value, index, hint):
    w = np.ones((4, 2, 3, 3), dtype=np.int64) * 4
    w[index] = value
    with pytest.raises(ir.ModelError) as e:
        ir.ShiftConv2d.from_weight("conv0", w, max_shift=7)
    idx = ", ".join(map(str, index))
    assert str(e.value) == (f"conv0: weight[{idx}] = {value} is not a signed power of two "
                            f"(0 or ±2**p, 0 <= p <= 7){hint}")


def test_from_weight_other_errors():
    with pytest.raises(ir.ModelError, match="expected an integer array"):
        ir.ShiftDense.from_weight("d", np.array([[0.5, 1.0]]))
    with pytest.raises(ir.ModelError, match="expected 4 dimensions"):
        ir.ShiftConv2d.from_weight("c", np.ones((2, 3), int))
    with pytest.raises(ir.ModelError, match=r"max_shift must be an integer in \[0, 30\]"):
        ir.ShiftDense.from_weight("d", np.ones((2, 3), int), max_shift=40)
    with pytest.raises(ir.ModelError, match=r"weight\[0, 1\] = 2 .*0 <= p <= 0\); raise max_shift to 1"):
        ir.ShiftDense.from_weight("d", np.array([[1, 2]]), max_shift=0)


def _shift_model(seed=0):
    rng = np.random.default_rng(seed)
    return ir.Model("s", (2, 5, 5), 8, 1 / 255, [
        ir.ShiftConv2d("c", **_shift_arrays(rng, (3, 2, 3, 3), 7), padding=1, max_shift=7),
        ir.Requant("r", mult=np.array([1, 3, 2]), bias=np.array([4, 0, 8]), shift=6, out_bits=8),
        ir.MaxPool2d("p"),
        ir.Flatten("f"),
        ir.ShiftDense("d", **_shift_arrays(rng, (4, 12), 7), max_shift=7),
        ir.Requant("o", mult=np.ones(4, int), bias=np.zeros(4, int), shift=0, out_bits=16, relu=False),
    ])


def test_save_load_roundtrip_and_golden_run(tmp_path):
    m = _shift_model()
    assert "shift_conv2d" in ir.layer_kinds() and "shift_dense" in ir.layer_kinds()
    m.save(tmp_path)
    m2 = ir.Model.load(tmp_path)
    assert m2.to_json() == m.to_json()
    assert m2.layers[0].to_json() == {"kind": "shift_conv2d", "name": "c", "stride": 1, "padding": 1, "max_shift": 7}
    for a, b in zip(m.layers, m2.layers):
        assert type(a) is type(b)
        for k, v in a.arrays().items():
            np.testing.assert_array_equal(v, b.arrays()[k])
    np.testing.assert_array_equal(m2.layers[4].weight, m.layers[4].sign << m.layers[4].shift)
    x = np.random.default_rng(3).integers(0, 256, (6, 2, 5, 5))
    np.testing.assert_array_equal(golden.run(m, x).scores, golden.run(m2, x).scores)  # ranges checked too


def test_missing_array_on_load(tmp_path):
    m = _shift_model()
    m.save(tmp_path)
    with np.load(tmp_path / "model.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "0.shift"}
    np.savez(tmp_path / "model.npz", **arrays)
    with pytest.raises(ir.ModelError, match=r"layer 0 \(shift_conv2d\): array 'shift' missing"):
        ir.Model.load(tmp_path)


@pytest.mark.parametrize("padding,stride", [(0, 1), (1, 1), (1, 2)])
def test_golden_shift_equals_multiplier_reference(padding, stride):
    """``sum s * (x << p)`` equals the multiplier conv/dense with the weight ``s << p``, edges included."""
    rng = np.random.default_rng(padding * 10 + stride)
    max_shift = 12
    sign, shift = _shift_arrays(rng, (5, 3, 3, 3), max_shift).values()
    sign[0], shift[0] = -1, max_shift      # most negative weight everywhere in one filter
    sign[1], shift[1] = 1, max_shift       # most positive
    sign[2] = 0                            # a filter of zeros
    x = rng.integers(0, 1 << 16, (3, 3, 6, 7))
    x[0] = (1 << 16) - 1                   # the largest unsigned input
    x[1, :, :2] = 0
    conv = ir.ShiftConv2d("s", sign=sign, shift=shift, stride=stride, padding=padding, max_shift=max_shift)
    ref = ir.Conv2d("m", weight=sign << shift, stride=stride, padding=padding)
    got = golden.execute(conv, x)
    np.testing.assert_array_equal(got, golden.execute(ref, x))
    assert conv.out_shape(x.shape[1:]) == got.shape[1:]
    assert conv.out_range(0, (1 << 16) - 1) == ref.out_range(0, (1 << 16) - 1)
    lo, hi = conv.out_range(0, (1 << 16) - 1)
    assert lo <= got.min() and got.max() <= hi
    assert got[0, 0].min() == lo and got[0, 1].max() == hi  # the worst case is attained

    flat = x.reshape(3, -1)[:, :40]
    sign, shift = _shift_arrays(rng, (6, 40), max_shift).values()
    sign[0], shift[0] = -1, max_shift
    dense = ir.ShiftDense("d", sign=sign, shift=shift, max_shift=max_shift)
    mac = ir.Dense("m", weight=sign << shift)
    np.testing.assert_array_equal(golden.execute(dense, flat), golden.execute(mac, flat))
    assert dense.out_range(0, (1 << 16) - 1) == mac.out_range(0, (1 << 16) - 1)
    assert golden.execute(dense, flat)[0, 0] == dense.out_range(0, (1 << 16) - 1)[0]


def test_value_range_is_exact_by_brute_force():
    import itertools
    sign, shift = np.array([[-1, 0, 1], [1, 1, -1]]), np.array([[3, 5, 0], [2, 0, 4]])
    layer = ir.ShiftDense("d", sign=sign, shift=shift)
    xs = np.array(list(itertools.product(range(8), repeat=3)))
    y = golden.shift_matrix(xs, sign, shift)
    assert layer.out_range(0, 7) == (y.min(), y.max())


# --------------------------------------------------------------------------- archs and training

def test_archs_are_registered():
    assert {"adder", "shift", "shiftadd", "conv"} <= set(archs())
    assert default_config("shift")["mode"] == "ps" and default_config("shift")["prange"] == [-7, 0]
    shift = build_model("shift", mode="q")
    types = [type(m) for m in shift]
    assert types == [ShiftConv2d, torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.MaxPool2d,
                     ShiftConv2d, torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.MaxPool2d,
                     torch.nn.Flatten, ShiftLinear, torch.nn.BatchNorm1d]
    assert shift[0].mode == "q" and shift[9].in_features == 64
    conv = build_model("conv")
    assert conv[0].bias is None and conv[9].bias is None and conv[9].in_features == 64
    assert conv(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="no option 'eta'"):
        build_model("shift", eta=0.1)


@pytest.mark.parametrize("arch,config", [("shift", {}), ("shift", {"mode": "q"}), ("conv", {}),
                                         ("shiftadd", {}), ("shiftadd", {"freeze": "shift", "mode": "q"})])
def test_three_epochs_learn(arch, config):
    m = train(arch=arch, epochs=3, seed=0, progress=False, config=config)
    assert m["test_accuracy"] > 0.5 and m["arch"] == arch


# --------------------------------------------------------------------------- ShiftAddNet


def test_shiftadd_structure():
    cfg = default_config("shiftadd")
    assert cfg == {"channels": [8, 16], "in_channels": 1, "input_size": 8, "num_classes": 10, "mode": "ps",
                   "prange": [-7, 0], "eta": 0.1, "add_kernel": 1, "freeze": "none",
                   "kernel": 3, "stride": 1, "padding": 1}
    model = build_model("shiftadd")
    types = [type(m) for m in model]
    nn = torch.nn
    assert types == [ShiftConv2d, AdderConv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d,
                     ShiftConv2d, AdderConv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d,
                     nn.Flatten, ShiftLinear, AdderLinear, nn.BatchNorm1d]
    assert (model[0].in_channels, model[0].out_channels, model[0].kernel_size) == (1, 8, 3)
    assert (model[1].in_channels, model[1].out_channels, model[1].kernel_size, model[1].padding) == (8, 8, 1, 0)
    assert (model[11].in_features, model[11].out_features, model[12].in_features) == (64, 10, 10)
    assert model.eval()(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    k3 = build_model("shiftadd", add_kernel=3, mode="q", prange=[-4, 1], eta=None)
    assert (k3[1].kernel_size, k3[1].padding, k3[1].eta, k3[0].mode, k3[0].pmax) == (3, 1, None, "q", 1)
    assert k3.eval()(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    for bad, match in (({"freeze": "both"}, "freeze must be one of none, shift, add"),
                       ({"add_kernel": 2}, "add_kernel must be an odd integer"),
                       ({"mode": "x"}, "mode must be one of ps, q")):
        with pytest.raises(ValueError, match=match) as e:
            build_model("shiftadd", **bad)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("freeze", ["none", "shift", "add"])
def test_shiftadd_freeze_really_freezes(freeze, tmp_path):
    model = build_model("shiftadd", freeze=freeze)
    frozen_types = {"none": (), "shift": (ShiftConv2d, ShiftLinear), "add": (AdderConv2d, AdderLinear)}[freeze]
    for m in model.modules():
        for p in m.parameters(recurse=False):
            assert p.requires_grad == (not isinstance(m, frozen_types))
    # One epoch of the real training loop (45 SGD steps), from the same initial weights.
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in build_model("shiftadd", freeze=freeze).state_dict().items()}
    train("shiftadd", epochs=1, seed=0, out=tmp_path / "m.pt", progress=False, config={"freeze": freeze})
    after, info = load_checkpoint(tmp_path / "m.pt")
    assert info["config"]["freeze"] == freeze
    for m_name, m in after.named_children():
        if not isinstance(m, (ShiftConv2d, ShiftLinear, AdderConv2d, AdderLinear)):
            continue
        for p_name, p in m.named_parameters(recurse=False):
            key = f"{m_name}.{p_name}"
            assert not p.requires_grad if isinstance(m, frozen_types) else p.requires_grad  # after loading too
            if isinstance(m, frozen_types):
                assert torch.equal(p.detach(), before[key]), key
            else:
                assert not torch.equal(p.detach(), before[key]), key
