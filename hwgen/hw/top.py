"""The accelerator top-level: one streaming engine per layer group, and its Verilog build.

:class:`Accelerator` composes the engines an integer model needs; :func:`generate` writes
``<name>.v`` and ``manifest.json``, the contract read by the cocotb testbench (``sim/``)
and the synthesis flow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from amaranth import Module, unsigned
from amaranth.back import verilog
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import ir
from ..util import atomic_write
from . import constructing, elem_shape
from .head import ArgmaxHead, result_layout
from .pool import MaxPoolEngine

__all__ = ["Accelerator", "generate", "random_digits_model", "MANIFEST_FORMAT", "MANIFEST_VERSION"]

MANIFEST_FORMAT = "hwgen-build"
MANIFEST_VERSION = 1

SUPPORTED = "adder_conv2d+requant, maxpool2d, flatten+adder_dense+requant (the last one ends the model)"


class _Stage:
    """One engine of the pipeline and what the manifest says about it."""

    def __init__(self, name, kind, layers, engine, in_shape, out_shape):
        self.name, self.kind, self.layers, self.engine = name, kind, layers, engine
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)

    def describe(self) -> dict:
        params = dict(getattr(self.engine, "params", {}) or {})
        return {**params, "name": self.name, "kind": self.kind, "layers": list(self.layers),
                "in_shape": list(self.in_shape), "out_shape": list(self.out_shape),
                "cycles_per_image": int(self.engine.cycles_per_image),
                "latency": getattr(self.engine, "latency", None)}


class Accelerator(wiring.Component):
    """Streaming accelerator of an integer model: pixels in, class scores and argmax out.

    Parameters
    ----------
    model : :class:`hwgen.ir.Model`
        Layer groups it builds: ``adder_conv2d, requant`` (a :class:`~hwgen.hw.conv.ConvEngine`),
        ``maxpool2d`` (a :class:`~hwgen.hw.pool.MaxPoolEngine`) and, last,
        ``flatten, adder_dense, requant`` (a ``ConvEngine`` in dense mode). An
        :class:`~hwgen.hw.head.ArgmaxHead` ends the pipeline.
    folding : dict or None
        ``{layer name: {"pe": int, "simd": int}}`` overrides for conv / dense layers.

    Members
    -------
    pixels : ``In(stream.Signature(data.ArrayLayout(unsigned(input_bits), C)))``
        Input pixels, raster order, all ``C`` channels per beat (channel 0 in the LSBs),
        images back to back. Verilog ports ``pixels__payload``, ``pixels__valid``,
        ``pixels__ready``.
    result : ``Out(stream.Signature(result_layout(classes, score_shape)))``
        One beat per image: ``scores`` (class 0 in the LSBs) then ``argmax``.

    Throughput is :attr:`cycles_per_image` (the slowest engine); see :attr:`latency_cycles`.

    Raises :class:`hwgen.ir.ModelError` for a layer kind or sequence without an engine.
    """

    def __init__(self, model: ir.Model, folding: dict | None = None):
        with constructing(self):
            if not isinstance(model, ir.Model):
                raise TypeError(f"model must be an hwgen.ir.Model, not {type(model).__name__}")
            self.model = model
            self.folding = {str(k): dict(v) for k, v in (folding or {}).items()}
            self.stages = self._build(model)
        head = self.stages[-1].engine
        self.score_shape = head.score_shape
        self.classes = head.classes
        super().__init__({
            "pixels": In(self._input_signature()),
            "result": Out(stream.Signature(result_layout(self.classes, self.score_shape))),
        })

    def _input_signature(self) -> stream.Signature:
        c = self.model.input_shape[0]
        return stream.Signature(data.ArrayLayout(unsigned(self.model.input_bits), c))

    # ------------------------------------------------------------------ building

    def _build(self, model: ir.Model) -> list[_Stage]:
        layers = model.layers
        in_shapes, in_ranges = model.in_shapes(), model.in_ranges()
        out_shapes, out_ranges = model.shapes(), model.value_ranges()
        foldable = {layer.name for layer in layers if layer.kind in ("adder_conv2d", "adder_dense")}
        unknown = sorted(set(self.folding) - foldable)
        if unknown:
            raise ir.ModelError(f"folding names {', '.join(map(repr, unknown))}, not a conv or dense layer "
                                f"of the model (those are: {', '.join(sorted(foldable)) or 'none'})")
        self.auto_folding = self._balanced(layers, in_shapes, in_ranges)
        stages = []
        try:
            return self._build_stages(layers, stages, in_shapes, in_ranges, out_shapes, out_ranges)
        except BaseException:
            for stage in stages:  # built before the error; not forgotten, just abandoned
                stage.engine._MustUse__silence = True
            raise

    @staticmethod
    def _balanced(layers, in_shapes, in_ranges) -> dict:
        """Default folding: the slowest engine at its fastest within the per-engine LUT
        budget sets the pace; every other engine takes the cheapest folding that keeps up
        (:func:`hwgen.hw.conv.balanced_foldings`). User overrides win over these."""
        from .conv import balanced_foldings

        specs, names = [], []
        for i, layer in enumerate(layers):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if layer.kind == "adder_conv2d" and nxt is not None and nxt.kind == "requant":
                specs.append((layer, tuple(in_shapes[i]), tuple(in_ranges[i]), nxt))
                names.append(layer.name)
            elif (layer.kind == "flatten" and i + 2 < len(layers) and nxt.kind == "adder_dense"
                  and layers[i + 2].kind == "requant"):
                shape = tuple(in_shapes[i]) if len(in_shapes[i]) == 3 else (in_shapes[i][0], 1, 1)
                specs.append((nxt, shape, tuple(in_ranges[i]), layers[i + 2]))
                names.append(nxt.name)
        if not specs:
            return {}
        try:
            folds = balanced_foldings(specs)
        except (TypeError, ValueError):
            return {}  # the engine itself reports what is wrong with the layer
        return {name: {"pe": pe, "simd": simd} for name, (pe, simd) in zip(names, folds)}

    def _build_stages(self, layers, stages, in_shapes, in_ranges, out_shapes, out_ranges):
        i, n = 0, len(layers)

        def expect(j, kind, after):
            if j >= n or layers[j].kind != kind:
                got = f"layer {layers[j].name!r} of kind {layers[j].kind!r}" if j < n else "the end of the model"
                raise ir.ModelError(f"layer {after.name!r} ({after.kind}) must be followed by a {kind} layer, "
                                    f"found {got}; supported sequences: {SUPPORTED}")
            return layers[j]

        while i < n:
            layer = layers[i]
            if layer.kind == "adder_conv2d":
                rq = expect(i + 1, "requant", layer)
                engine = self._conv(layer, rq, in_shapes[i], in_ranges[i])
                stages.append(_Stage(layer.name, "adder_conv2d", [layer.name, rq.name], engine,
                                     in_shapes[i], out_shapes[i + 1]))
                i += 2
            elif layer.kind == "maxpool2d":
                c, h, w = in_shapes[i]
                engine = MaxPoolEngine(c, (h, w), layer.size, elem_shape(*in_ranges[i]))
                stages.append(_Stage(layer.name, "maxpool2d", [layer.name], engine, in_shapes[i], out_shapes[i]))
                i += 1
            elif layer.kind == "flatten":
                dense = expect(i + 1, "adder_dense", layer)
                rq = expect(i + 2, "requant", dense)
                if i + 3 != n:
                    raise ir.ModelError(f"layer {layers[i + 3].name!r} follows the dense layer {dense.name!r}; "
                                        f"only one dense layer, at the end, has an engine yet; supported: {SUPPORTED}")
                in_shape = in_shapes[i]
                if len(in_shape) == 1:
                    in_shape = (in_shape[0], 1, 1)
                engine = self._conv(dense, rq, in_shape, in_ranges[i])
                stages.append(_Stage(dense.name, "adder_dense", [layer.name, dense.name, rq.name], engine,
                                     in_shape, out_shapes[i + 2]))
                i += 3
            else:
                raise ir.ModelError(f"layer {layer.name!r} of kind {layer.kind!r} has no hardware engine yet; "
                                    f"supported: {SUPPORTED}")
        if not stages or stages[-1].kind != "adder_dense":
            raise ir.ModelError(f"the model must end with flatten, adder_dense, requant to give one beat of class "
                                f"scores per image; supported: {SUPPORTED}")
        classes = out_shapes[-1][0]
        head = ArgmaxHead(classes, elem_shape(*out_ranges[-1]))
        stages.append(_Stage("argmax", "argmax", [], head, (classes,), (classes,)))

        links = [(f"input ({model_channels(self.model)} channels)", _payload_layout(self._input_signature())),
                 *((s.name, _payload_layout(s.engine.signature.members["o"].signature)) for s in stages[:-1])]
        for (src, out_layout), stage in zip(links, stages):
            in_layout = _payload_layout(stage.engine.signature.members["i"].signature)
            if out_layout.length != in_layout.length:
                raise RuntimeError(f"internal error: {src} gives {out_layout.length} channels per beat, "
                                   f"{stage.name} takes {in_layout.length}")
        return stages

    def _conv(self, layer, requant, in_shape, in_range):
        from .conv import ConvEngine  # written alongside; imported late so pool/head stand alone

        fold = self.folding.get(layer.name, {})
        extra = set(fold) - {"pe", "simd"}
        fold = {**self.auto_folding.get(layer.name, {}), **fold}
        if extra:
            raise ir.ModelError(f"folding of {layer.name!r}: unknown keys {sorted(extra)}; use 'pe' and 'simd'")
        try:
            return ConvEngine(layer, requant, tuple(in_shape), tuple(in_range),
                              pe=fold.get("pe"), simd=fold.get("simd"))
        except (TypeError, ValueError) as e:
            if isinstance(e, ir.ModelError):
                raise
            raise ir.ModelError(f"layer {layer.name!r}: {e}") from None

    # ------------------------------------------------------------------ figures

    @property
    def engines(self) -> list:
        return [s.engine for s in self.stages]

    @property
    def cycles_per_image(self) -> int:
        """Throughput bound: cycles per image of the slowest engine."""
        return max(int(e.cycles_per_image) for e in self.engines)

    @property
    def latency_cycles(self) -> int | None:
        """Estimate of the cycles from the first pixel of an image accepted to its result valid,
        on an idle pipeline without stalls: ``Σ (cycles_per_image + latency)`` over the engines.

        It assumes no overlap between engines, so it is an upper bound of the streaming
        pipeline's latency (the digits model: estimate 1883, simulated 1530). ``None`` if an
        engine states no ``latency``.
        """
        total = 0
        for e in self.engines:
            lat = getattr(e, "latency", None)
            if lat is None:
                return None
            total += int(e.cycles_per_image) + int(lat)
        return total

    # ------------------------------------------------------------------ elaboration

    def elaborate(self, platform):
        m = Module()
        for stage in self.stages:
            m.submodules[stage.name] = stage.engine
        engines = self.engines
        _link(m, self.pixels, engines[0].i, own_input=True)
        for a, b in zip(engines, engines[1:]):
            _link(m, a.o, b.i)
        wiring.connect(m, engines[-1].result, wiring.flipped(self.result))
        return m


def model_channels(model: ir.Model) -> int:
    return model.input_shape[0]


def _payload_layout(signature: stream.Signature) -> data.ArrayLayout:
    return data.Layout.cast(signature.members["payload"].shape)


def _link(m: Module, src, dst, *, own_input: bool = False):
    """Stream ``src`` into ``dst``; ``own_input``: ``src`` is the top's own ``In`` port.

    With equal signatures this is :func:`wiring.connect`. An engine may size its elements
    wider than the derived range needs (e.g. ``out_bits`` lanes); the values are proven to lie
    in the derived range, so element-wise sign/zero extension or truncation preserves them.
    """
    if _payload_layout(src.signature) == _payload_layout(dst.signature):
        wiring.connect(m, wiring.flipped(src) if own_input else src, dst)
        return
    m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready)]
    for c in range(_payload_layout(dst.signature).length):
        m.d.comb += dst.payload[c].eq(src.payload[c])


# --------------------------------------------------------------------------- build output

def manifest(top: Accelerator, name: str = "hwgen_top") -> dict:
    """The ``manifest.json`` document of ``top`` (see :func:`generate`)."""
    model = top.model
    c = model.input_shape[0]
    b = model.input_bits
    n, sb = top.classes, top.score_shape.width
    ab = ir.ceil_log2(n)
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "top": name,
        "verilog": f"{name}.v",
        "ports": {
            "pixels": {"channels": c, "bits": b, "payload_width": c * b},
            "result": {"classes": n, "score_bits": sb, "score_signed": bool(top.score_shape.signed),
                       "argmax_offset": n * sb, "argmax_bits": ab, "payload_width": n * sb + ab},
        },
        "input_shape": list(model.input_shape),
        "cycles_per_image": top.cycles_per_image,
        "latency_cycles": top.latency_cycles,
        "engines": [s.describe() for s in top.stages],
        "folding": {**top.auto_folding, **top.folding},
        "folding_overrides": top.folding,
        "clock": "clk",
        "reset": "rst",
    }


def generate(model: ir.Model, out_dir, folding: dict | None = None, name: str = "hwgen_top") -> dict:
    """Elaborate ``model`` and write ``out_dir/<name>.v`` and ``out_dir/manifest.json``.

    Both files are complete or absent: everything is elaborated before anything is written,
    and each file goes through a temporary file and a rename. The Verilog starts with
    ```timescale 1ns/1ps``. Returns the manifest.
    """
    if not name.isidentifier():
        raise ValueError(f"top-level name {name!r} is not a valid Verilog identifier")
    top = Accelerator(model, folding)
    doc = manifest(top, name)
    text = "`timescale 1ns/1ps\n" + verilog.convert(top, name=name, emit_src=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    body = json.dumps(doc, indent=2) + "\n"
    atomic_write(out / f"{name}.v", lambda f: f.write(text))
    atomic_write(out / "manifest.json", lambda f: f.write(body))
    return doc


# --------------------------------------------------------------------------- test model

def _csd_near(target: float, max_terms: int = 3) -> int:
    """The integer closest to ``target`` with at most ``max_terms`` canonical signed digits."""
    t = int(round(target))
    for d in range(0, 1 << 20):
        for v in (t - d, t + d):
            if len(ir.csd(v)) <= max_terms:
                return v
    raise AssertionError("unreachable")


def _calibrated_requant(name, acc, out_lo, out_hi, *, relu, out_bits, shift=12) -> ir.Requant:
    """Requant mapping each channel's 1st..99th percentile of ``acc`` onto ``[out_lo, out_hi]``.

    The multiplier is negative: the adder output is ``-distance``, so the most similar input
    (largest value, nearest 0) gives the smallest activation.  Any direction works for a test.
    """
    axes = tuple(i for i in range(acc.ndim) if i != 1)
    lo = np.percentile(acc, 1, axis=axes)
    hi = np.percentile(acc, 99, axis=axes)
    span = np.maximum(hi - lo, 1)
    mult, bias = [], []
    for ch in range(acc.shape[1]):
        scale = (out_hi - out_lo) / span[ch]
        m = -_csd_near(scale * (1 << shift))
        mult.append(m)
        # y = (acc * m + bias) >> shift maps hi -> out_lo, lo -> out_hi (approximately).
        bias.append(int(round(out_lo * (1 << shift) - hi[ch] * m)))
    return ir.Requant(name, mult=np.array(mult), bias=np.array(bias), shift=shift, out_bits=out_bits, relu=relu)


def random_digits_model(seed: int = 0, calibration: np.ndarray | None = None) -> ir.Model:
    """A digits-shaped AdderNet with random weights and calibrated requantization, for tests.

    conv1 (8×1×3×3, pad 1) → bn1 → pool1 → conv2 (16×8×3×3, pad 1) → bn2 → pool2 → flatten →
    fc (10×64) → bn3 (16-bit signed scores). Input 1×8×8, 8 bits. ``calibration``: integer
    images ``(N, 1, 8, 8)`` used to choose requant parameters so activations spread over
    their range; defaults to 64 training digits quantized as ``round(x * 255)``.
    """
    from .. import golden

    rng = np.random.default_rng(seed)
    if calibration is None:
        from ..data import digits
        calibration = np.round(digits()[0][:64] * 255).astype(np.int64)
    x = np.asarray(calibration, dtype=np.int64)

    layers = []

    def add(layer):
        nonlocal x
        layers.append(layer)
        x = golden.execute(layer, x)

    add(ir.AdderConv2d("conv1", weight=rng.integers(-128, 128, size=(8, 1, 3, 3)), padding=1))
    add(_calibrated_requant("bn1", x, 0, 255, relu=True, out_bits=8))
    add(ir.MaxPool2d("pool1", size=2))
    add(ir.AdderConv2d("conv2", weight=rng.integers(-128, 128, size=(16, 8, 3, 3)), padding=1))
    add(_calibrated_requant("bn2", x, 0, 255, relu=True, out_bits=8))
    add(ir.MaxPool2d("pool2", size=2))
    add(ir.Flatten("flatten"))
    add(ir.AdderDense("fc", weight=rng.integers(-128, 128, size=(10, 64))))
    add(_calibrated_requant("bn3", x, -2000, 2000, relu=False, out_bits=16))
    return ir.Model(name=f"random-digits-{seed}", input_shape=(1, 8, 8), input_bits=8, input_scale=1 / 255,
                    layers=layers, classes=[str(i) for i in range(10)])
