"""Winograd-AdderNet (issue 5, model side): the PyTorch layer, transform sets, l2-to-l1 schedule,
integer layer kind, golden executor, quantizer and op counts."""

import itertools

import numpy as np
import pytest
import torch

from hwgen import data, energy, golden, ir
from hwgen.nn import build_model, default_config, embedded_checkpoint, load_checkpoint
from hwgen.nn.adder import adder_l1
from hwgen.nn.train import evaluate, train
from hwgen.nn.winograd import (TRANSFORMS, WinogradAdderConv2d, exact_for_multiplication, l2_to_l1_power,
                               transform_set)
from hwgen.quant import quantize, quantize_input


def _reference(x, u, bt, at, padding):
    """``Aᵀ[-Σ_c |U - Bᵀ d B|]A`` tile by tile with explicit loops (float64)."""
    x, u, bt, at = (np.asarray(a, dtype=np.float64) for a in (x, u, bt, at))
    n, c, h, w = x.shape
    o = u.shape[0]
    oh, ow = h + 2 * padding - 2, w + 2 * padding - 2
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    xp = np.zeros((n, c, 2 * th + 2, 2 * tw + 2))
    xp[:, :, padding:padding + h, padding:padding + w] = x
    y = np.zeros((n, o, 2 * th, 2 * tw))
    for b, ty, tx, oc in itertools.product(range(n), range(th), range(tw), range(o)):
        m = np.zeros((4, 4))
        for ic in range(c):
            d = xp[b, ic, 2 * ty:2 * ty + 4, 2 * tx:2 * tx + 4]
            m -= np.abs(u[oc, ic] - bt @ d @ bt.T)
        y[b, oc, 2 * ty:2 * ty + 2, 2 * tx:2 * tx + 2] = at @ m @ at.T
    return y[:, :, :oh, :ow]


SIZES = [(8, 1), (4, 1), (3, 1), (5, 1), (6, 0), (5, 0), (7, 0), (2, 1)]


# --------------------------------------------------------------------------- transform sets

@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_shipped_sets_are_exact_winograd_for_multiplication(name):
    assert exact_for_multiplication(name)
    t = {k: v.numpy() for k, v in transform_set(name).items()}
    rng = np.random.default_rng(0)
    g, d = rng.normal(size=(3, 3)), rng.normal(size=(4, 4))
    y = t["at"] @ ((t["g"] @ g @ t["g"].T) * (t["bt"] @ d @ t["bt"].T)) @ t["at"].T
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(y, direct, atol=1e-12)


def _sign_mix(at):
    aa = np.kron(at, at)  # row 2a+b: coefficients of output (a, b)
    return [(int((r > 0).sum()), int((r < 0).sum())) for r in aa]


def test_balanced_set_gives_every_output_the_same_sign_mix():
    assert _sign_mix(np.array(TRANSFORMS["balanced"]["at"])) == [(5, 4)] * 4
    assert _sign_mix(np.array(TRANSFORMS["standard"]["at"])) == [(9, 0), (3, 6), (3, 6), (5, 4)]
    # The balanced set differs from the standard one by the column signs D = diag(1, 1, -1, 1).
    dd = np.diag([1, 1, -1, 1])
    np.testing.assert_array_equal(np.array(TRANSFORMS["balanced"]["at"]), np.array(TRANSFORMS["standard"]["at"]) @ dd)
    np.testing.assert_array_equal(np.array(TRANSFORMS["balanced"]["g"]), dd @ np.array(TRANSFORMS["standard"]["g"]))


@pytest.mark.parametrize("bad, message", [
    ("lavin", "unknown Winograd transform set 'lavin'"),
    ({"bt": TRANSFORMS["standard"]["bt"], "g": TRANSFORMS["standard"]["g"]}, "exactly the keys at, bt, g"),
    ({**TRANSFORMS["standard"], "at": [[1, 1, 1], [0, 1, -1]]}, r"at: expected shape 2×4, got 2×3"),
    ({**TRANSFORMS["standard"], "g": [[1, 0, 0], [0.25, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]},
     r"g\[1\]\[0\] = 0.25: entries must be 0, ±1 or ±0.5"),
    ({**TRANSFORMS["standard"], "bt": "identity"}, "bt: not a matrix of numbers"),
])
def test_invalid_transform_set_is_a_one_line_error(bad, message):
    with pytest.raises(ValueError, match=message) as e:
        build_model("winograd-adder", transform=bad)
    assert "\n" not in str(e.value)


def test_custom_set_builds_and_is_used():
    custom = {"bt": TRANSFORMS["standard"]["bt"], "g": TRANSFORMS["standard"]["g"],
              "at": [[1, 1, 0, 0], [0, 0, 1, 1]]}  # valid entries, not an exact Winograd set
    assert not exact_for_multiplication(custom)
    model = build_model("winograd-adder", transform=custom)
    np.testing.assert_array_equal(model[0].at.numpy(), np.array(custom["at"], dtype=np.float32))
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


# --------------------------------------------------------------------------- the PyTorch layer

@pytest.mark.parametrize("h, padding", SIZES)
@pytest.mark.parametrize("transform", ["standard", "balanced"])
def test_layer_forward_matches_loops(h, padding, transform):
    torch.manual_seed(1)
    layer = WinogradAdderConv2d(3, 2, padding=padding, transform=transform).double()
    x = torch.rand(2, 3, h, h + 1, dtype=torch.float64)
    y = layer(x)
    ref = _reference(x.numpy(), layer.weight.detach().numpy(), layer.bt.numpy(), layer.at.numpy(), padding)
    assert y.shape == ref.shape == (2, 2, h + 2 * padding - 2, h + 2 * padding - 1)
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-12, atol=1e-10)


def test_layer_validates_arguments():
    for kwargs in ({"padding": 2}, {"padding": True}, {"in_channels": 0}):
        args = {"in_channels": 1, "out_channels": 2, **kwargs}
        with pytest.raises(ValueError, match="WinogradAdderConv2d"):
            WinogradAdderConv2d(**args)
    with pytest.raises(ValueError, match="too small"):
        WinogradAdderConv2d(1, 1, padding=0)(torch.zeros(1, 1, 2, 2))


def test_backward_is_addernets_surrogate():
    """Full-precision ``V - U`` for U and ``HT(U - V)`` for V: inside ``|U - V| < 1`` both are the
    gradients of ``-½ (U - V)²``, so the layer's gradients equal those of that l2 form."""
    torch.manual_seed(2)
    layer = WinogradAdderConv2d(2, 3, padding=1, eta=None).double()
    with torch.no_grad():
        layer.weight.mul_(0.02)
    x = (0.05 * torch.rand(2, 2, 4, 6, dtype=torch.float64)).requires_grad_()
    gy = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    (layer(x) * gy).sum().backward()

    u = layer.weight.detach().clone().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    xp = torch.nn.functional.pad(x2, (1, 1, 1, 1))
    cols = torch.nn.functional.unfold(xp, 4, stride=2).reshape(2, 2, 4, 4, 2, 3)     # n c ky kx ty tx
    v = torch.einsum("ik,nckltw,jl->nctwij", layer.bt.double(), cols, layer.bt.double())
    assert float((u[None, :, :, None, None] - v[:, None]).abs().max().detach()) < 1
    m = -0.5 * ((u[None, :, :, None, None] - v[:, None]) ** 2).sum(dim=2)              # n o ty tx i j
    y = torch.einsum("ai,notwij,bj->notawb", layer.at.double(), m, layer.at.double()).reshape(2, 3, 4, 6)
    (y * gy).sum().backward()
    torch.testing.assert_close(layer.weight.grad, u.grad)
    torch.testing.assert_close(x.grad, x2.grad)


def test_input_gradient_is_clipped_and_adaptive_rate_normalises_u():
    torch.manual_seed(3)
    layer = WinogradAdderConv2d(2, 4, eta=0.2).double()
    u = 50.0 * torch.sign(torch.randn(16, 4, 2, dtype=torch.float64))  # |U - V| >> 1 everywhere
    v = torch.randn(16, 5, 2, dtype=torch.float64, requires_grad=True)
    adder_l1(v, u, None).sum().backward()
    torch.testing.assert_close(v.grad, u.sum(dim=1, keepdim=True).expand(16, 5, 2) / 50.0)  # sum_o sign(U - V)
    layer(torch.rand(2, 2, 6, 6, dtype=torch.float64)).sum().backward()
    norm = float(torch.linalg.vector_norm(layer.weight.grad))
    assert norm == pytest.approx(0.2 * (4 * 2 * 16) ** 0.5)  # one norm over all of U


def test_batched_adder_l1_equals_separate_problems():
    torch.manual_seed(4)
    x = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 7, 4, dtype=torch.float64)
    (adder_l1(x, w) * g).sum().backward()
    for b in range(3):
        xb, wb = x[b].detach().clone().requires_grad_(), w[b].detach().clone().requires_grad_()
        (adder_l1(xb, wb) * g[b]).sum().backward()
        torch.testing.assert_close(x.grad[b], xb.grad)
        torch.testing.assert_close(w.grad[b], wb.grad)
    y2 = adder_l1(x, w, None, p=2.0)
    torch.testing.assert_close(y2, -((x[:, :, None] - w[:, None]) ** 2).sum(-1))


# --------------------------------------------------------------------------- l2-to-l1 schedule

def test_l2_to_l1_schedule():
    assert [l2_to_l1_power(e, 10) for e in range(11)] == [2.0, 1.8, 1.6, 1.4, 1.2, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert l2_to_l1_power(0, 1) == 2.0 and l2_to_l1_power(1, 1) == 1.0
    layer = WinogradAdderConv2d(1, 1, l2_to_l1=True)
    assert layer.p == 1.0  # outside training
    layer.epoch_hook(0, 4)
    assert layer.p == 2.0
    x = torch.rand(1, 1, 4, 4)
    y2 = layer(x)
    d = torch.nn.functional.pad(x, (1, 1, 1, 1))
    bt, at, u = layer.bt, layer.at, layer.weight.detach()[0, 0]
    for ty, tx in itertools.product(range(2), range(2)):
        m = -((u - bt @ d[0, 0, 2 * ty:2 * ty + 4, 2 * tx:2 * tx + 4] @ bt.T) ** 2)
        ref2 = at @ m @ at.T
        torch.testing.assert_close(y2[0, 0, 2 * ty:2 * ty + 2, 2 * tx:2 * tx + 2], ref2, rtol=1e-5, atol=1e-4)
    off = WinogradAdderConv2d(1, 1, l2_to_l1=False)
    off.epoch_hook(0, 4)
    assert off.p == 1.0


def test_train_calls_the_epoch_hook_and_ends_at_l1(tmp_path):
    m = train("winograd-adder", epochs=2, progress=False, out=tmp_path / "w.pt",
              config={"l2_to_l1": True, "channels": [2, 4]})
    model, info = load_checkpoint(tmp_path / "w.pt")
    assert info["config"]["l2_to_l1"] is True and m["epochs"] == 2
    assert all(mod.p == 1.0 for mod in model.modules() if isinstance(mod, WinogradAdderConv2d))
    seen = []

    class Spy(torch.nn.Module):
        def epoch_hook(self, epoch, epochs):
            seen.append((epoch, epochs))

    from hwgen.nn import train as train_mod
    net = torch.nn.Sequential(Spy())
    train_mod._epoch_hooks(net, 0, 3)
    assert seen == [(0, 3)]


# --------------------------------------------------------------------------- golden model

@pytest.mark.parametrize("h, padding", SIZES)
@pytest.mark.parametrize("transform", ["standard", "balanced"])
def test_golden_float_matches_reference_and_layer(h, padding, transform):
    """The golden executor, fed float weights, is the transformed formula; the PyTorch layer agrees."""
    rng = np.random.default_rng(h * 10 + padding)
    t = {k: v.numpy() for k, v in transform_set(transform).items()}
    x = rng.random((2, 3, h, h + 1))
    u = rng.normal(size=(4, 3, 4, 4))
    y = golden.winograd_adder(x, u, t["bt"], t["at"], padding)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, _reference(x, u, t["bt"], t["at"], padding), rtol=1e-12, atol=1e-10)
    layer = WinogradAdderConv2d(3, 4, padding=padding, transform=transform).double()
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(u))
    np.testing.assert_allclose(layer(torch.as_tensor(x)).detach().numpy(), y, rtol=1e-12, atol=1e-10)


def _int_layer(seed=0, o=3, c=2, padding=1, transform="balanced"):
    rng = np.random.default_rng(seed)
    t = transform_set(transform)
    return ir.WinogradAdderConv2d(name="w", u=rng.integers(-600, 900, size=(o, c, 4, 4)),
                                  bt=t["bt"].numpy().astype(np.int64), at=t["at"].numpy().astype(np.int64),
                                  padding=padding)


@pytest.mark.parametrize("h, padding", [(8, 1), (3, 1), (5, 0)])
def test_golden_integer_is_exact_and_inside_the_derived_range(h, padding):
    layer = _int_layer(padding=padding)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(4, 2, h, h))
    y = golden.execute(layer, x)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, _reference(x, layer.u, layer.bt, layer.at, padding).astype(np.int64))
    lo, hi = layer.out_range(0, 255)
    assert lo <= y.min() and y.max() <= hi
    # The extremes of V and of the lanes are reached by all-zero / all-255 tiles.
    v_lo, v_hi = layer.v_range(0, 255)
    assert v_lo.min() == -510 and v_hi.max() == 1020 and v_lo[1, 1] == 0
    m_lo, m_hi = layer.lane_range(0, 255)
    assert m_lo.shape == (3, 4, 4) and (m_lo <= m_hi).all() and (m_hi <= 0).all()


def test_ir_layer_validation_and_round_trip(tmp_path):
    layer = _int_layer()
    for kwargs, message in (({"bt": np.full((4, 4), 3)}, "entries must be 0, ±1 or ±2"),
                            ({"at": np.ones((4, 4), dtype=np.int64)}, "expected shape 2×4"),
                            ({"u": np.zeros((2, 2, 3, 3), dtype=np.int64)}, r"expected shape \(O, C, 4, 4\)"),
                            ({"padding": 2}, "padding must be 0 or 1")):
        with pytest.raises(ir.ModelError, match=message):
            ir.WinogradAdderConv2d(**{"name": "w", "u": layer.u, "bt": layer.bt, "at": layer.at, **kwargs})
    model = ir.Model(name="t", input_shape=(2, 5, 5), input_bits=8, input_scale=1.0,
                     layers=[layer, ir.Flatten(name="f")])
    assert model.shapes()[0] == (3, 5, 5)
    model.save(tmp_path)
    loaded = ir.Model.load(tmp_path)
    assert loaded.to_json() == model.to_json()
    np.testing.assert_array_equal(loaded.layers[0].u, layer.u)
    x = np.random.default_rng(0).integers(0, 256, size=(3, 2, 5, 5))
    np.testing.assert_array_equal(golden.run(loaded, x).scores, golden.run(model, x).scores)


# --------------------------------------------------------------------------- quantizer, counts

@pytest.fixture(scope="module")
def shipped():
    model, info = load_checkpoint(embedded_checkpoint("winograd-adder"))
    x_tr, _, x_te, y_te = data.digits()
    return model, info, quantize(model, x_tr, x_test=x_te, y_test=y_te, classes=data.CLASSES)


def test_shipped_checkpoint_and_integer_accuracy(shipped):
    model, info, q = shipped
    assert info["arch"] == "winograd-adder"
    assert {**default_config("winograd-adder"), **info["config"]} == default_config("winograd-adder")
    assert info["metrics"]["seed"] == 0 and info["metrics"]["epochs"] == 100
    _, _, x_te, y_te = data.digits()
    acc = evaluate(model, x_te, y_te)
    assert acc >= 0.95 and acc == pytest.approx(info["metrics"]["test_accuracy"])
    assert [layer.kind for layer in q.layers] == [
        "winograd_adder_conv2d", "requant", "maxpool2d", "winograd_adder_conv2d", "requant", "maxpool2d",
        "flatten", "adder_dense", "requant"]
    assert abs(q.meta["integer_accuracy"] - q.meta["float_accuracy"]) <= 0.015
    x_tr = data.digits()[0]
    golden.run(q, quantize_input(q, x_tr))  # every tensor inside its derived range


def test_per_layer_agreement_with_float(shipped):
    """The integer Winograd layer is the float layer at the integer scale (only rounding differs)."""
    from hwgen.quant import float_reference
    model, _, q = shipped
    x = np.array(data.digits()[2][:64])
    ref = float_reference(model, x)
    res = golden.run(q, quantize_input(q, x))
    for i, layer in enumerate(q.layers):
        if layer.kind != "winograd_adder_conv2d":
            continue
        real = (res.layers[i] - np.array(q.meta["adder_offsets"][layer.name])[None, :, None, None]) \
            * q.meta["layer_scales"][i]
        spread = np.abs(ref[i]).max()
        assert np.abs(real - ref[i]).max() <= 0.05 * spread, layer.name


def test_quantize_refuses_an_unfinished_schedule():
    model = build_model("winograd-adder", l2_to_l1=True)
    model[0].epoch_hook(0, 10)
    with pytest.raises(ir.ModelError, match="p = 2.0"):
        quantize(model, np.random.default_rng(0).random((8, 1, 8, 8)))


def test_op_counts_against_direct_form(shipped):
    _, _, q = shipped
    rows = energy.op_counts(q)
    conv0 = next(r for r in rows if r["layer"] == "conv0")
    # 8×8 output, 16 tiles, C=1, O=8: 32 input-transform adds per tile and channel, 24 output-transform adds.
    assert conv0["by_type"]["absdiff"] == 16 * 16 * 1 * 8
    assert conv0["by_type"]["add"] == 16 * 1 * 32 + 16 * 8 * 24
    cmp = {r["layer"]: r for r in energy.winograd_vs_direct(q)}
    assert set(cmp) == {"conv0", "conv1"}
    assert cmp["conv0"]["absdiff_ratio"] == 2.25 and cmp["conv1"]["absdiff_ratio"] == 2.25
    assert cmp["conv1"]["direct"]["absdiff"] == 4 * 4 * 16 * 9 * 8
    assert cmp["conv1"]["winograd"]["add"] == 4 * 8 * 32 + 16 * 4 * 16 * 7 + 4 * 16 * 24
    energy.op_energy(q)  # every width has an energy


def test_odd_size_model_quantizes_and_runs():
    """A 5×5 map (not whole tiles): the float model, the integer model and golden agree on shapes."""
    torch.manual_seed(0)
    model = build_model("winograd-adder", input_size=5, channels=[4], l2_to_l1=False)
    x = np.random.default_rng(1).random((32, 1, 5, 5)).astype(np.float32)
    model.train()
    model(torch.as_tensor(x))  # BatchNorm statistics
    q = quantize(model, x)
    assert q.shapes()[0] == (4, 5, 5)
    golden.run(q, quantize_input(q, x))


@pytest.mark.slow
def test_shipped_checkpoint_is_reproduced(tmp_path):
    m = train("winograd-adder", seed=0, out=tmp_path / "w.pt", progress=False)
    mine, _ = load_checkpoint(tmp_path / "w.pt")
    shipped_model, info = load_checkpoint(embedded_checkpoint("winograd-adder"))
    assert m["test_accuracy"] == info["metrics"]["test_accuracy"]
    for k, v in shipped_model.state_dict().items():
        assert torch.equal(v, mine.state_dict()[k]), k
