"""A stand-in accelerator and build folder, for testing the simulation and synthesis flow.

The design computes the integer model ``flatten → dense`` with 0/1 weights: class ``i``'s
score is the sum of the pixels its mask selects.  Hardware: one accumulator per class,
one pixel (all channels) per cycle, then one result beat; ``pixels.ready`` is low while a
result waits.  ``error=True`` adds 1 to class 0's score, a bug the simulation must catch.

:func:`write_build` writes a build folder exactly like ``hwgen build`` does
(``model.json``/``.npz``, ``hwgen_top.v``, ``manifest.json``, ``vectors.npz``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from amaranth import Cat, Const, Module, Signal, signed, unsigned
from amaranth.back import verilog
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

try:
    from hwgen import golden, ir
    from hwgen.hw.head import index_bits
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from hwgen import golden, ir
    from hwgen.hw.head import index_bits


def fixture_model(channels=2, height=4, width=4, classes=3, bits=4, seed=0) -> ir.Model:
    rng = np.random.default_rng(seed)
    k = channels * height * width
    weight = (rng.random((classes, k)) < 0.5).astype(np.int64)
    weight[:, 0] = 0  # keep pixel 0 unused somewhere so argmax ties happen
    return ir.Model(name="fixture", input_shape=(channels, height, width), input_bits=bits, input_scale=1 / 16,
                    layers=[ir.Flatten("flat"), ir.Dense("fc", weight=weight)],
                    classes=[f"c{i}" for i in range(classes)])


def score_bits(model: ir.Model) -> int:
    lo, hi = model.value_ranges()[-1]
    return ir.signed_bits_for(lo, hi)


class FixtureTop(wiring.Component):
    """Sum-of-selected-pixels accelerator with the hwgen_top ports."""

    def __init__(self, model: ir.Model, error: bool = False):
        self.model = model
        self.error = error
        c, h, w = model.input_shape
        self.n = model.num_classes
        self.sb = score_bits(model)
        self.ab = index_bits(self.n)
        super().__init__({
            "pixels": In(stream.Signature(unsigned(c * model.input_bits))),
            "result": Out(stream.Signature(unsigned(self.n * self.sb + self.ab))),
        })

    def elaborate(self, platform):
        m = Module()
        model = self.model
        c, h, w = model.input_shape
        b = model.input_bits
        hw = h * w
        weight = model.layers[-1].weight  # (n, c*h*w), channel-major (PyTorch flatten)
        index = Signal(range(hw))
        accs = [Signal(signed(self.sb), name=f"acc{i}") for i in range(self.n)]
        pending = Signal()

        m.d.comb += self.pixels.ready.eq(~pending)
        with m.If(self.pixels.valid & self.pixels.ready):
            chans = [self.pixels.payload[ch * b:(ch + 1) * b] for ch in range(c)]
            with m.Switch(index):
                for p in range(hw):
                    with m.Case(p):
                        for i, acc in enumerate(accs):
                            terms = [chans[ch] for ch in range(c) if weight[i, ch * hw + p]]
                            if terms:
                                m.d.sync += acc.eq(acc + sum(terms))
            with m.If(index == hw - 1):
                m.d.sync += [index.eq(0), pending.eq(1)]
            with m.Else():
                m.d.sync += index.eq(index + 1)

        scores = [Signal(signed(self.sb), name=f"score{i}") for i in range(self.n)]
        for i, (s, acc) in enumerate(zip(scores, accs)):
            m.d.comb += s.eq(acc + 1 if (self.error and i == 0) else acc)
        # First maximum wins, like numpy.argmax.
        best, best_i = scores[0], Const(0, self.ab)
        for i in range(1, self.n):
            better = scores[i] > best
            nb = Signal(signed(self.sb), name=f"best{i}")
            ni = Signal(self.ab, name=f"besti{i}")
            m.d.comb += [nb.eq(scores[i]), ni.eq(i)]
            with m.If(~better):
                m.d.comb += [nb.eq(best), ni.eq(best_i)]
            best, best_i = nb, ni
        payload = [s.as_unsigned() for s in scores]
        m.d.comb += [self.result.payload.eq(Cat(*payload, best_i)), self.result.valid.eq(pending)]
        with m.If(self.result.valid & self.result.ready):
            m.d.sync += [pending.eq(0)] + [a.eq(0) for a in accs]
        return m


def write_build(directory, model: ir.Model | None = None, error: bool = False, images: int = 12,
                seed: int = 0) -> Path:
    """Write a complete build folder for the fixture design; returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = model or fixture_model()
    model.save(directory)
    top = FixtureTop(model, error=error)
    text = verilog.convert(top, name="hwgen_top")
    (directory / "hwgen_top.v").write_text(text)
    rng = np.random.default_rng(seed)
    c, h, w = model.input_shape
    x = rng.integers(0, 1 << model.input_bits, size=(images, c, h, w), dtype=np.int64)
    x[0] = 0  # all-zero image: every score ties, argmax must pick class 0
    labels = golden.run(model, x).argmax.copy()
    if images > 1:
        labels[1] = (labels[1] + 1) % model.num_classes  # so accuracy is not trivially 1
    np.savez(directory / "vectors.npz", x=x, labels=labels)
    n, sb, ab = top.n, top.sb, top.ab
    manifest = {
        "format": "hwgen-build", "version": 1, "top": "hwgen_top", "verilog": "hwgen_top.v",
        "ports": {"pixels": {"channels": c, "bits": model.input_bits, "payload_width": c * model.input_bits},
                  "result": {"classes": n, "score_bits": sb, "argmax_offset": n * sb, "argmax_bits": ab,
                             "payload_width": n * sb + ab}},
        "input_shape": [c, h, w],
        "cycles_per_image": h * w + 1,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return directory
