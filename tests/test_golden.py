"""The golden model against naive loops written from the layer definitions."""

import numpy as np
import pytest

from hwgen import golden, ir


def naive_conv(x, w, padding, op):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = h + 2 * padding - kh + 1, wd + 2 * padding - kw + 1
    y = np.zeros((n, o, oh, ow), dtype=np.int64)
    for b in range(n):
        for oc in range(o):
            for i in range(oh):
                for j in range(ow):
                    acc = 0
                    for ic in range(c):
                        for di in range(kh):
                            for dj in range(kw):
                                acc += op(int(xp[b, ic, i + di, j + dj]), int(w[oc, ic, di, dj]))
                    y[b, oc, i, j] = acc
    return y


@pytest.mark.parametrize("padding", [0, 1])
def test_adder_and_mac_conv(padding):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 3, 5, 6))
    w = rng.integers(-128, 128, (4, 3, 3, 3))
    adder = ir.AdderConv2d("a", weight=w, padding=padding)
    mac = ir.Conv2d("m", weight=w, padding=padding)
    np.testing.assert_array_equal(golden.execute(adder, x), naive_conv(x, w, padding, lambda a, b: -abs(a - b)))
    np.testing.assert_array_equal(golden.execute(mac, x), naive_conv(x, w, padding, lambda a, b: a * b))


def test_requant_rounds_toward_minus_infinity_and_clamps():
    layer = ir.Requant("r", mult=np.array([3, -5]), bias=np.array([1, 2]), shift=2, out_bits=4, relu=False)
    x = np.array([[-7, 9], [40, -40]])
    # (-7*3+1)>>2 = -20>>2 = -5; (9*-5+2)>>2 = -43>>2 = -11 -> clamp -8; 121>>2=30 -> 7; 202>>2=50 -> 7
    np.testing.assert_array_equal(golden.requant(layer, x), [[-5, -8], [7, 7]])
    relu = ir.Requant("r", mult=np.array([3, -5]), bias=np.array([1, 2]), shift=2, out_bits=4, relu=True)
    np.testing.assert_array_equal(golden.requant(relu, x), [[0, 0], [15, 15]])


def test_maxpool_floor_mode():
    x = np.arange(2 * 5 * 7).reshape(1, 2, 5, 7)
    y = golden.maxpool(ir.MaxPool2d("p", size=2), x)
    assert y.shape == (1, 2, 2, 3)
    assert y[0, 0, 0, 0] == x[0, 0, 1, 1] and y[0, 1, 1, 2] == x[0, 1, 3, 5]


def test_run_checks_input_and_ranges():
    from test_ir import small_model

    m = small_model()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, (5, 2, 5, 5))
    r = golden.run(m, x)
    assert r.scores.shape == (5, 4) and len(r.layers) == len(m.layers)
    np.testing.assert_array_equal(r.argmax, np.argmax(r.scores, axis=1))
    with pytest.raises(ValueError, match="outside"):
        golden.run(m, x + 16)
    with pytest.raises(ValueError, match="shape"):
        golden.run(m, x[:, :1])


def test_right_shift_of_negative_numbers_is_floor():
    """The documented rounding: ``>>`` of a negative number rounds toward minus infinity, as the
    hardware's two's-complement arithmetic shift (not toward zero)."""
    layer = ir.Requant("r", mult=np.array([1]), bias=np.array([0]), shift=2, out_bits=8, relu=False)
    x = np.array([[-9], [-8], [-7], [-1], [0], [1], [7]])
    np.testing.assert_array_equal(golden.requant(layer, x).ravel(), [-3, -2, -2, -1, 0, 0, 1])
    np.testing.assert_array_equal(golden.requant(layer, x).ravel(), np.floor(x.ravel() / 4).astype(int))


def test_shift_layer_with_negative_inputs_equals_multiplier():
    """Signed inputs (after a requantizer without ReLU): the left shifts stay exact."""
    rng = np.random.default_rng(5)
    sign, shift = rng.integers(-1, 2, (4, 30)), rng.integers(0, 8, (4, 30))
    x = rng.integers(-128, 128, (20, 30))
    x[0] = -128
    np.testing.assert_array_equal(golden.shift_matrix(x, sign, shift), golden.mac_matrix(x, sign << shift))
    layer = ir.ShiftDense("d", sign=sign, shift=shift, max_shift=7)
    lo, hi = layer.out_range(-128, 127)
    y = golden.execute(layer, x)
    assert lo <= y.min() and y.max() <= hi
