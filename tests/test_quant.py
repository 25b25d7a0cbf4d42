"""hwgen.quant: PyTorch models (adder, shift, shift-add, conv) → integer model, checked against the
float model and the golden model."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from hwgen import data, golden, ir
from hwgen import flow
from hwgen.nn import AdderConv2d, AdderLinear, build_model, embedded_checkpoint, load_checkpoint
from hwgen.nn.shift import ShiftConv2d, ShiftLinear
from hwgen.quant import csd_round, float_reference, quantize, quantize_input


@pytest.fixture(scope="module")
def float_model():
    model, _ = load_checkpoint(embedded_checkpoint())
    return model


@pytest.fixture(scope="module")
def qmodel(float_model):
    x_tr, _, x_te, y_te = data.digits()
    return quantize(float_model, x_tr, classes=data.CLASSES, x_test=x_te, y_test=y_te)


def test_structure_and_requant_rules(qmodel):
    kinds = [layer.kind for layer in qmodel.layers]
    assert kinds == ["adder_conv2d", "requant", "maxpool2d", "adder_conv2d", "requant", "maxpool2d",
                     "flatten", "adder_dense", "requant"]
    assert qmodel.input_bits == 8 and qmodel.input_shape == (1, 8, 8) and qmodel.classes == data.CLASSES
    for layer in qmodel.layers:
        if layer.kind.startswith("adder"):
            assert layer.weight.min() >= -128 and layer.weight.max() <= 127
        if layer.kind == "requant":
            assert max(len(ir.csd(m)) for m in layer.mult) <= 3
            assert layer.shift >= 6  # enough fractional bits for the multipliers
            assert np.abs(layer.mult).max() >= 1 << 9  # mult has ~10-12 significant bits
    rqs = [layer for layer in qmodel.layers if layer.kind == "requant"]
    assert [r.relu for r in rqs] == [True, True, False]
    assert [r.out_bits for r in rqs] == [8, 8, 16]


def test_accuracy_within_one_point(qmodel, float_model):
    x_tr, _, x_te, y_te = data.digits()
    with torch.no_grad():
        float_acc = float((float_model(torch.as_tensor(np.array(x_te))).argmax(1).numpy() == y_te).mean())
    int_acc = golden.accuracy(qmodel, quantize_input(qmodel, x_te), y_te)  # range checks on
    assert float_acc >= 0.95
    assert abs(int_acc - float_acc) <= 0.01
    assert qmodel.meta["float_accuracy"] == pytest.approx(float_acc)
    assert qmodel.meta["integer_accuracy"] == pytest.approx(int_acc)
    # The training images pass the exact range checks too.
    golden.run(qmodel, quantize_input(qmodel, x_tr))


def test_per_layer_agreement_with_float(qmodel, float_model):
    for layer, err, s, peak in _per_layer_errors(float_model, qmodel, data.digits()[2][:100]):
        # Quantization error: a few LSBs plus the requantizers' CSD scale error (a few %).
        assert err.max() <= 4 * s + 0.06 * peak, (layer.name, err.max(), s, peak)
        assert err.mean() <= s + 0.02 * peak, (layer.name, err.mean(), s, peak)


def test_requant_outputs_use_their_range(qmodel):
    _, _, x_te, _ = data.digits()
    res = golden.run(qmodel, quantize_input(qmodel, x_te))
    for i, layer in enumerate(qmodel.layers):
        if layer.kind == "requant" and layer.relu:
            assert res.layers[i].max() >= 64  # calibrated: the 8-bit range is used, not squashed
    assert np.abs(res.scores).max() >= 1 << 12  # scores keep resolution for argmax


def test_save_load_round_trip(qmodel, tmp_path):
    _, _, x_te, _ = data.digits()
    xq = quantize_input(qmodel, x_te[:20])
    loaded = ir.Model.load(qmodel.save(tmp_path / "m"))
    np.testing.assert_array_equal(golden.run(loaded, xq).scores, golden.run(qmodel, xq).scores)
    assert loaded.meta["integer_accuracy"] == qmodel.meta["integer_accuracy"]


def test_quantize_input():
    m = ir.Model(name="t", input_shape=(1, 1, 3), input_bits=4, input_scale=0.1,
                 layers=[ir.Flatten(name="f")])
    got = quantize_input(m, np.array([[[[-1.0, 0.26, 9.0]]]]))
    np.testing.assert_array_equal(got, [[[[0, 3, 15]]]])
    assert got.dtype == np.int64


def test_csd_round():
    for v in range(-600, 600):
        r = csd_round(v, 2)
        assert len(ir.csd(r)) <= 2
        best = min(abs(v - c) for c in range(-1300, 1300) if len(ir.csd(c)) <= 2)
        assert abs(v - r) == best
    assert csd_round(0b1011101, 5) == 0b1011101
    with pytest.raises(ValueError):
        csd_round(5, 0)


def test_fewer_requant_terms_still_valid(float_model):
    x_tr, _, x_te, y_te = data.digits()
    q = quantize(float_model, x_tr, requant_terms=2)
    for layer in q.layers:
        if layer.kind == "requant":
            assert layer.max_terms == 2 and max(len(ir.csd(m)) for m in layer.mult) <= 2
    assert golden.accuracy(q, quantize_input(q, x_te), y_te) > 0.8


def test_exact_weight_clipping():
    """Weights far outside the activation range are clipped with a bias correction, exactly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), AdderLinear(16, 4), nn.BatchNorm1d(4)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.rand(4, 16) * 40 - 20)  # |w| up to 20, inputs in [0, 1]
        model[2].running_var.fill_(400.0)
    x = torch.rand(64, 1, 4, 4)
    x[0] = 1.0  # calibration reaches the top of the range
    q = quantize(model, x.numpy())
    assert q.layers[1].weight.min() == -128 and q.layers[1].weight.max() == 127
    assert any(q.meta["adder_offsets"]["dense0"])
    scores = golden.run(q, quantize_input(q, x.numpy())).scores * q.layers[-1].scale
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(scores - want).max() <= 0.05 * np.abs(want).max()


def test_unsupported_module_is_a_model_error():
    model = nn.Sequential(AdderConv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv1d(2, 2, 1))
    with pytest.raises(ir.ModelError, match="Conv1d") as e:
        quantize(model, np.random.rand(4, 1, 8, 8))
    assert "\n" not in str(e.value)
    with pytest.raises(ir.ModelError, match="BatchNorm"):
        quantize(nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4)), np.random.rand(4, 1, 2, 2))
    with pytest.raises(ir.ModelError, match="ReLU"):
        quantize(nn.Sequential(nn.ReLU(), AdderConv2d(1, 2, 3), nn.Flatten(), AdderLinear(72, 2)),
                 np.random.rand(4, 1, 8, 8))
    with pytest.raises(ir.ModelError, match="Conv2d.*groups=1"):
        quantize(nn.Sequential(nn.Conv2d(1, 2, 3, groups=1, dilation=2), nn.Flatten()), np.random.rand(4, 1, 8, 8))
    with pytest.raises(ir.ModelError, match="BatchNorm"):
        quantize(nn.Sequential(ShiftConv2d(1, 2, 3), nn.BatchNorm1d(2)), np.random.rand(4, 1, 8, 8))
    with pytest.raises(ir.ModelError, match="no weight layer"):
        quantize(nn.Sequential(nn.MaxPool2d(2), nn.Flatten()), np.random.rand(4, 1, 8, 8))
    with pytest.raises(ir.ModelError, match="MaxPool2d.*floor mode"):
        quantize(nn.Sequential(AdderConv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(3, ceil_mode=True), nn.Flatten(),
                               AdderLinear(8, 2)), np.random.rand(4, 1, 8, 8))
    with pytest.raises(ValueError, match="negative"):
        quantize(build_model("adder"), -np.ones((2, 1, 8, 8)))


# --------------------------------------------------------------------------- every shipped arch

_KINDS = {
    "shift": ["shift_conv2d", "requant", "maxpool2d", "shift_conv2d", "requant", "maxpool2d", "flatten",
              "shift_dense", "requant"],
    "conv": ["conv2d", "requant", "maxpool2d", "conv2d", "requant", "maxpool2d", "flatten", "dense", "requant"],
    "shiftadd": ["shift_conv2d", "requant", "adder_conv2d", "requant", "maxpool2d",
                 "shift_conv2d", "requant", "adder_conv2d", "requant", "maxpool2d", "flatten",
                 "shift_dense", "requant", "adder_dense", "requant"],
}


@pytest.fixture(scope="module", params=["shift", "shiftadd", "conv"])
def shipped(request):
    """``(arch, float model, integer model)`` of a shipped checkpoint, quantized by flow.load_model."""
    path = embedded_checkpoint(request.param)
    model, info = load_checkpoint(path)
    assert info["arch"] == request.param
    return request.param, model, flow.load_model(path)


def test_shipped_structure_names_and_signedness(shipped):
    arch, _, q = shipped
    assert [layer.kind for layer in q.layers] == _KINDS[arch]
    assert q.name == f"digits-{arch}" and q.classes == data.CLASSES
    # Names: conv/requant pairs, then pool, flatten, dense/requant pairs, numbered in order.
    counts = {}
    for layer in q.layers:
        base = {"maxpool2d": "pool", "flatten": "flatten", "requant": "requant"}.get(
            layer.kind, "conv" if "conv" in layer.kind else "dense")
        assert layer.name == f"{base}{counts.get(base, 0)}"
        counts[base] = counts.get(base, 0) + 1
    rqs = [layer for layer in q.layers if layer.kind == "requant"]
    assert rqs[-1].relu is False and rqs[-1].out_bits == 16
    for i, layer in enumerate(q.layers[:-1]):
        if layer.kind == "requant":
            nxt = q.layers[i + 1]
            # Signed 8-bit values exactly where a shift layer feeds an adder layer directly.
            assert layer.out_bits == 8 and layer.relu == (not nxt.kind.startswith("adder")), layer.name
            assert max(len(ir.csd(m)) for m in layer.mult) <= 3
    for layer in q.layers:
        if layer.kind in ("conv2d", "dense", "adder_conv2d", "adder_dense"):
            assert layer.weight.min() >= -128 and layer.weight.max() <= 127
    if arch == "shiftadd":
        lo, hi = q.in_ranges()[2]  # the adder conv takes signed inputs (derived worst case)
        assert -128 <= lo < 0 < hi <= 127


def test_shipped_integer_accuracy_matches_float(shipped):
    arch, model, q = shipped
    x_tr, _, x_te, y_te = data.digits()
    with torch.no_grad():
        float_acc = float((model(torch.as_tensor(np.array(x_te))).argmax(1).numpy() == y_te).mean())
    int_acc = golden.accuracy(q, quantize_input(q, x_te), y_te)  # range checks on
    assert float_acc >= 0.95
    assert abs(int_acc - float_acc) <= 0.015, (arch, float_acc, int_acc)
    assert q.meta["float_accuracy"] == pytest.approx(float_acc)
    assert q.meta["integer_accuracy"] == pytest.approx(int_acc)
    golden.run(q, quantize_input(q, x_tr))  # the training images pass the exact range checks too


def _per_layer_errors(float_model, q, x):
    """Yield ``(layer, error, lsb, peak)``: integer output in real units against float_reference."""
    ref = float_reference(float_model, x)
    res = golden.run(q, quantize_input(q, x))
    scales = q.meta["layer_scales"]
    assert len(ref) == len(res.layers) == len(scales) == len(q.layers)
    for layer, f, y, s in zip(q.layers, ref, res.layers, scales):
        assert f.shape == y.shape, layer.name
        shape = (1, -1) + (1,) * (y.ndim - 2)
        y = y.astype(np.float64)
        if layer.name in q.meta["adder_offsets"]:
            y = y - np.array(q.meta["adder_offsets"][layer.name]).reshape(shape)
        cs = np.array(q.meta.get("channel_scales", {}).get(layer.name, [1.0]))
        yield layer, np.abs(y * s * cs.reshape(shape if cs.size > 1 else (1,)) - f), s * cs.max(), np.abs(f).max()


def test_shipped_per_layer_agreement_with_float(shipped):
    arch, model, q = shipped
    for layer, err, lsb, peak in _per_layer_errors(model, q, data.digits()[2][:100]):
        assert err.max() <= 4 * lsb + 0.07 * peak, (arch, layer.name, err.max(), lsb, peak)
        assert err.mean() <= lsb + 0.02 * peak, (arch, layer.name, err.mean(), lsb, peak)


def test_shift_ir_has_only_powers_of_two_in_range(shipped):
    arch, model, q = shipped
    shift_modules = [m for m in model.modules() if isinstance(m, (ShiftConv2d, ShiftLinear))]
    shift_layers = [layer for layer in q.layers if layer.kind.startswith("shift")]
    assert len(shift_modules) == len(shift_layers) == (0 if arch == "conv" else 3)
    for m, layer in zip(shift_modules, shift_layers):
        assert layer.max_shift == m.pmax - m.pmin == 7
        assert set(np.unique(layer.sign)) <= {-1, 0, 1}
        assert layer.shift.min() >= 0 and layer.shift.max() <= layer.max_shift
        w = layer.weight
        mag = np.abs(w[w != 0])
        assert ((mag & (mag - 1)) == 0).all() and mag.max() <= 1 << layer.max_shift
        # The integer weight is the trained effective weight / 2**pmin, exactly.
        np.testing.assert_array_equal(w * 2.0 ** m.pmin, m.effective_weight().detach().double().numpy())
        assert np.count_nonzero(layer.sign) > 0.1 * layer.sign.size  # trained, not collapsed to zero (PS prunes many)
        # Loading the layer back from its weight gives the same layer.
        again = type(layer).from_weight(layer.name, w, max_shift=layer.max_shift, **{
            k: v for k, v in layer.params().items() if k != "max_shift"})
        np.testing.assert_array_equal(again.sign, layer.sign)
        np.testing.assert_array_equal(again.shift, layer.shift)


def test_golden_shift_layers_equal_float_recomputation(shipped):
    """Each shift layer's golden output is the float layer on the same (dequantized) input, exactly;
    each requantizer is BatchNorm (+ReLU) of it to within half an LSB plus its CSD scale error."""
    arch, model, q = shipped
    if arch == "conv":
        pytest.skip("no shift layers")
    x = quantize_input(q, data.digits()[2][:50])
    res = golden.run(q, x)
    ins = [x] + res.layers[:-1]
    stages = [m for m in model if not isinstance(m, (nn.ReLU, nn.MaxPool2d, nn.Flatten))]
    scales = q.meta["layer_scales"]
    k = 0
    for i, layer in enumerate(q.layers):
        if layer.kind not in ("shift_conv2d", "shift_dense", "adder_conv2d", "adder_dense"):
            continue
        module = stages[k]
        k += 1
        bn = stages[k] if k < len(stages) and isinstance(stages[k], (nn.BatchNorm1d, nn.BatchNorm2d)) else None
        k += bn is not None
        s_in = q.input_scale if i == 0 else scales[i - 1]
        with torch.no_grad():
            acc_f = copy.deepcopy(module).double()(torch.as_tensor(ins[i] * s_in)).numpy()
        shape = (1, -1) + (1,) * (res.layers[i].ndim - 2)
        acc = res.layers[i] - np.array(q.meta["adder_offsets"].get(layer.name, 0)).reshape(
            shape if layer.name in q.meta["adder_offsets"] else ())
        if layer.kind.startswith("shift"):
            # Powers of two on a power-of-two-free scale: the float computation is exact.
            np.testing.assert_allclose(acc * scales[i], acc_f, rtol=1e-12, atol=1e-12 * np.abs(acc_f).max())
        else:
            np.testing.assert_allclose(acc * scales[i], acc_f, rtol=1e-9, atol=scales[i] * 0.5 * np.prod(
                layer.weight.shape[1:]))  # the adder weights are rounded to the input's scale
        rq = q.layers[i + 1]
        z = torch.as_tensor(acc * scales[i])
        with torch.no_grad():
            if bn is not None:
                z = copy.deepcopy(bn).double()(z)
        want = np.clip(z.numpy() / rq.scale, *rq.clamp)
        err = np.abs(res.layers[i + 1] - want)
        assert err.max() <= 0.5 + 1e-3 + q.meta["requant_max_scale_error"][rq.name] * np.abs(want).max(), \
            (layer.name, err.max())


def test_signed_adder_inputs_clip_exactly():
    """Shift → adder without a ReLU between: signed 8-bit inputs; far-off adder weights are clipped
    with an offset that is exact for every signed input."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), ShiftLinear(16, 6), AdderLinear(6, 4), nn.BatchNorm1d(4)).eval()
    with torch.no_grad():
        model[2].weight.copy_(torch.rand(4, 6) * 16 - 8)  # many weights far outside the activations
        model[3].running_var.fill_(100.0)
    x = torch.rand(200, 1, 4, 4)
    q = quantize(model, x.numpy())
    assert [layer.kind for layer in q.layers] == ["flatten", "shift_dense", "requant", "adder_dense", "requant"]
    rq = q.layers[2]
    assert not rq.relu and rq.out_bits == 8 and rq.clamp == (-128, 127)
    assert q.layers[3].weight.min() == -128 and q.layers[3].weight.max() == 127
    offset = np.array(q.meta["adder_offsets"]["dense1"])
    assert offset.any()
    # Every signed input, not just the calibrated ones: acc - offset is the l1 of the unclipped weights.
    s_in = q.layers[2].scale
    w_unclipped = np.round(model[2].weight.detach().double().numpy() / s_in).astype(np.int64)
    xs = np.random.default_rng(0).integers(-128, 128, (500, 6))
    xs[0], xs[1] = -128, 127
    np.testing.assert_array_equal(golden.execute(q.layers[3], xs) - offset, golden.l1_matrix(xs, w_unclipped))
    res = golden.run(q, quantize_input(q, x.numpy()))
    assert res.layers[2].min() < 0 < res.layers[2].max()
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(res.scores * q.layers[-1].scale - want).max() <= 0.05 * np.abs(want).max()


@pytest.mark.parametrize("per_channel", [True, False])
def test_multiplier_layers_with_bias(per_channel):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64, 3)).eval()
    with torch.no_grad():
        model[0].weight[0] *= 0.05  # channels of very different magnitude
    x = torch.rand(100, 1, 8, 8)
    q = quantize(model, x.numpy(), mac_per_channel=per_channel)
    assert [layer.kind for layer in q.layers] == ["conv2d", "requant", "maxpool2d", "flatten", "dense", "requant"]
    cs = q.meta["channel_scales"]["conv0"]
    assert (len(set(cs)) == 4) if per_channel else (len(set(cs)) == 1)
    w = q.layers[0].weight
    assert np.abs(w).max() == 127
    if per_channel:
        assert (np.abs(w).reshape(4, -1).max(axis=1) == 127).all()
    res = golden.run(q, quantize_input(q, x.numpy()))
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(res.scores * q.layers[-1].scale - want).max() <= 0.03 * np.abs(want).max()
    for layer, err, lsb, peak in _per_layer_errors(model, q, x.numpy()):
        assert err.max() <= 4 * lsb + 0.06 * peak, (layer.name, err.max(), lsb, peak)


def test_middle_layer_without_relu_gives_signed_values():
    torch.manual_seed(2)
    model = nn.Sequential(AdderConv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), AdderLinear(72, 3)).eval()
    x = torch.rand(50, 1, 8, 8)
    q = quantize(model, x.numpy())
    assert not q.layers[1].relu and q.layers[1].clamp == (-128, 127)
    res = golden.run(q, quantize_input(q, x.numpy()))
    assert res.layers[1].min() < 0
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(res.scores * q.layers[-1].scale - want).max() <= 0.05 * np.abs(want).max()


def test_strided_winograd_is_refused_in_one_line():
    from hwgen.nn.winograd import WinogradAdderConv2d

    layer = WinogradAdderConv2d(1, 2, padding=1)
    layer.stride = 2  # as a capture of a strided Winograd layer would give
    model = nn.Sequential(layer, nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), AdderLinear(128, 2))
    with pytest.raises(ir.ModelError, match=r"with stride 2: the Winograd F\(2×2, 3×3\) engine computes "
                                            r"stride 1 only; use an AdderConv2d") as e:
        quantize(model, np.random.rand(4, 1, 8, 8))
    assert "\n" not in str(e.value)
