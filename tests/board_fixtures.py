"""Small models and build folders for the board tests (the link core, the board simulation,
``hwgen infer``): a real accelerator, small enough to simulate many frames quickly."""

from __future__ import annotations

import numpy as np

from hwgen import data, flow, ir


def tiny_model(seed=0, c=2, h=3, w=3, classes=3) -> ir.Model:
    """``flatten → adder_dense → requant`` on a 2×3×3 input, 8-bit pixels, 16-bit scores."""
    rng = np.random.default_rng(seed)
    one = np.ones(classes, dtype=np.int64)
    return ir.Model(name="tiny", input_shape=(c, h, w), input_bits=8, input_scale=1 / 255,
                    layers=[ir.Flatten("flat"),
                            ir.AdderDense("fc", weight=rng.integers(-128, 128,
                                                                    (classes, c * h * w))),
                            ir.Requant("bn", mult=one, bias=0 * one, shift=0, out_bits=16,
                                       relu=False)],
                    classes=[f"c{i}" for i in range(classes)])


def tiny_dataset(model: ir.Model, n=40, seed=1) -> data.Dataset:
    """Random images of ``model``'s shape, labelled with the golden model's own answers except
    every third test image (so that accuracy is not trivially 1); the second half is the test
    set."""
    from hwgen import golden

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *model.input_shape)) / 255.0
    y = golden.run(model, np.round(x * 255).astype(np.int64)).argmax.copy()
    y[n // 2::3] = (y[n // 2::3] + 1) % model.num_classes
    return data.from_arrays(x.astype(np.float32), y, split=np.arange(n) >= n // 2,
                            name="tiny", pixel_max=1.0)


def tiny_build(out, seed=0):
    """A build folder (``hwgen build``'s) of :func:`tiny_model`."""
    model = tiny_model(seed)
    flow.build(model, out, dataset=tiny_dataset(model))
    return out
