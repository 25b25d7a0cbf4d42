"""hwgen.quant: PyTorch AdderNet → integer model, checked against the float model and the golden model."""

import numpy as np
import pytest
import torch
from torch import nn

from hwgen import data, golden, ir
from hwgen.nn import AdderConv2d, AdderLinear, build_model, embedded_checkpoint, load_checkpoint
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
    _, _, x_te, _ = data.digits()
    x = x_te[:100]
    ref = float_reference(float_model, x)
    res = golden.run(qmodel, quantize_input(qmodel, x))
    scales = qmodel.meta["layer_scales"]
    assert len(ref) == len(res.layers) == len(scales) == len(qmodel.layers)
    for layer, f, q, s in zip(qmodel.layers, ref, res.layers, scales):
        assert f.shape == q.shape, layer.name
        q = q.astype(np.float64)
        if layer.name in qmodel.meta["adder_offsets"]:
            off = np.array(qmodel.meta["adder_offsets"][layer.name])
            q = q - off.reshape((1, -1) + (1,) * (q.ndim - 2))
        err = np.abs(q * s - f)
        peak = np.abs(f).max()
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
        quantize(nn.Sequential(AdderConv2d(1, 2, 3), nn.Flatten(), AdderLinear(72, 2)),
                 np.random.rand(4, 1, 8, 8))
    with pytest.raises(ir.ModelError, match="MaxPool2d"):
        quantize(nn.Sequential(AdderConv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(3, stride=1), nn.Flatten(),
                               AdderLinear(8, 2)), np.random.rand(4, 1, 8, 8))
    with pytest.raises(ValueError, match="negative"):
        quantize(build_model("adder"), -np.ones((2, 1, 8, 8)))
