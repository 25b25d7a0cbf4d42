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
from .head import ArgmaxHead, RawHead, index_bits, raw_layout, result_layout
from .pool import POOL_KINDS, MaxPoolEngine, WindowPoolEngine, engine_cls, pool_cycles, pool_engine, pool_lanes

__all__ = ["Accelerator", "generate", "MANIFEST_FORMAT", "MANIFEST_VERSION", "SUPPORTED"]

MANIFEST_FORMAT = "hwgen-build"
MANIFEST_VERSION = 1

#: Conv and dense layer kinds with an engine (:class:`~hwgen.hw.conv.ConvEngine`).
CONV_KINDS = ("adder_conv2d", "shift_conv2d", "conv2d", "winograd_adder_conv2d")
DENSE_KINDS = ("adder_dense", "shift_dense", "dense")
#: Keys of a layer's entry in the folding dict.
FOLDING_KEYS = ("pe", "simd", "weights", "overlap")
#: Keys of a max-pool layer's entry in the folding dict (:class:`~hwgen.hw.pool.MaxPoolEngine`).
POOL_FOLDING_KEYS = ("lanes",)

SUPPORTED = ("{adder_conv2d|shift_conv2d|conv2d|winograd_adder_conv2d}+requant, "
             "{maxpool2d|sumpool2d|global_sumpool2d}, then flatten and one or more "
             "{adder_dense|shift_dense|dense}+requant (the last one ends the model)")


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
        Layer groups it builds, each a :class:`~hwgen.hw.conv.ConvEngine` unless said
        otherwise: a conv layer (``adder_conv2d``, ``shift_conv2d`` or ``conv2d``) and its
        ``requant``; ``maxpool2d`` (a :class:`~hwgen.hw.pool.MaxPoolEngine`, or for overlapping or
        padded windows a :class:`~hwgen.hw.pool.WindowPoolEngine`); ``flatten`` and a
        dense layer (``adder_dense``, ``shift_dense`` or ``dense``) with its ``requant`` (dense
        mode, over the map); then any number of further dense + ``requant`` pairs, the last
        ending the model.  Conv layers may follow each other without a pool, and a requant
        without ReLU (signed) may feed the next layer, as in ShiftAddNet's
        ``shift_conv2d, requant, adder_conv2d (1×1), requant``.  An
        :class:`~hwgen.hw.head.ArgmaxHead` ends the pipeline.
    folding : dict or None
        ``{layer name: {"pe": int, "simd": int, "weights": "rom" | "const"}}`` overrides for
        conv / dense layers, any subset of the keys (see :class:`~hwgen.hw.conv.ConvEngine`);
        ``{pool name: {"lanes": int}}`` for max-pool layers (channels compared per cycle; by
        default the fewest that slow down no engine, see ``_add_pools``).

    Members
    -------
    pixels : ``In(stream.Signature(data.ArrayLayout(unsigned(input_bits), C)))``
        Input pixels, raster order, all ``C`` channels per beat (channel 0 in the LSBs),
        images back to back. Verilog ports ``pixels__payload``, ``pixels__valid``,
        ``pixels__ready``.
    argmax : bool
        Keyword, default True: an :class:`~hwgen.hw.head.ArgmaxHead` ends the pipeline.  False:
        the output is not a classification, and the last layer's values leave as they are
        (:class:`~hwgen.hw.head.RawHead`, no argmax field).

    Members
    -------
    result : ``Out(stream.Signature(result_layout(classes, score_shape)))``
        One beat per image: ``scores`` (class 0 in the LSBs) then ``argmax``; with
        ``argmax=False``, ``raw_layout(classes, score_shape)``: the scores only.

    Throughput is :attr:`cycles_per_image` (the slowest engine); see :attr:`latency_cycles`.

    Raises :class:`hwgen.ir.ModelError` for a layer kind or sequence without an engine.
    """

    def __init__(self, model: ir.Model, folding: dict | None = None, target_cycles: int | None = None,
                 *, argmax: bool = True):
        with constructing(self):
            if not isinstance(argmax, bool):
                raise TypeError(f"argmax must be a bool, not {argmax!r}")
            self.argmax = argmax
            if not isinstance(model, ir.Model):
                raise TypeError(f"model must be an hwgen.ir.Model, not {type(model).__name__}")
            if target_cycles is not None and (not isinstance(target_cycles, int) or target_cycles < 1):
                raise ir.ModelError(f"target cycles per image must be a positive integer, not {target_cycles!r}")
            self.model = model
            self.target_cycles = target_cycles
            self.folding = {str(k): dict(v) for k, v in (folding or {}).items()}
            self.stages = self._build(model)
        head = self.stages[-1].engine
        self.score_shape = head.score_shape
        self.classes = head.classes
        super().__init__({
            "pixels": In(self._input_signature()),
            "result": Out(stream.Signature((result_layout if argmax else raw_layout)(
                self.classes, self.score_shape))),
        })

    def _input_signature(self) -> stream.Signature:
        c = self.model.input_shape[0]
        return stream.Signature(data.ArrayLayout(unsigned(self.model.input_bits), c))

    # ------------------------------------------------------------------ building

    def _build(self, model: ir.Model) -> list[_Stage]:
        layers = model.layers
        in_shapes, in_ranges = model.in_shapes(), model.in_ranges()
        out_shapes, out_ranges = model.shapes(), model.value_ranges()
        foldable = {layer.name for layer in layers if layer.kind in CONV_KINDS + DENSE_KINDS}
        pools = {layer.name for layer in layers if layer.kind in POOL_KINDS}
        kinds = {layer.name: layer.kind for layer in layers}
        unknown = sorted(set(self.folding) - foldable - pools)
        if unknown:
            raise ir.ModelError(f"folding names {', '.join(map(repr, unknown))}, not a conv, dense or max-pool "
                                f"layer of the model (those are: {', '.join(sorted(foldable | pools)) or 'none'})")
        for name, fold in self.folding.items():
            keys = POOL_FOLDING_KEYS if name in pools else FOLDING_KEYS
            extra = sorted(set(fold) - set(keys))
            if extra:
                raise ir.ModelError(f"folding of {name!r}: unknown keys {extra}; use "
                                    f"{', '.join(map(repr, keys))}")
            if "weights" in fold and fold["weights"] not in ("rom", "const"):
                raise ir.ModelError(f"folding of {name!r}: weights={fold['weights']!r}; use 'rom' (a weight "
                                    f"memory) or 'const' (weights folded into the logic)")
            if kinds[name] == "winograd_adder_conv2d" and ("simd" in fold or fold.get("weights", "rom") != "rom"):
                from .winograd import LANES as WINOGRAD_LANES
                raise ir.ModelError(f"folding of {name!r}: the Winograd tile engine takes pe (output "
                                    f"channels in parallel) and overlap (1: a second tile buffer, 0: none); "
                                    f"its lanes are {WINOGRAD_LANES} and u sits in a ROM")
            if kinds[name] != "winograd_adder_conv2d" and name not in pools and "overlap" in fold:
                raise ir.ModelError(f"folding of {name!r}: overlap applies to Winograd-adder layers only; "
                                    f"a {kinds[name]} engine takes pe, simd and weights")
        self.auto_folding = self._balanced(layers, in_shapes, in_ranges)
        stages = []
        try:
            return self._build_stages(layers, stages, in_shapes, in_ranges, out_shapes, out_ranges)
        except BaseException:
            for stage in stages:  # built before the error; not forgotten, just abandoned
                stage.engine._MustUse__silence = True
            raise

    def _engine_specs(self, layers, in_shapes, in_ranges):
        """``(layer, in_shape, in_range, requant)`` of every conv / dense engine, in order."""
        specs = []
        for i, layer in enumerate(layers):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if layer.kind in CONV_KINDS + DENSE_KINDS and nxt is not None and nxt.kind == "requant":
                shape = tuple(in_shapes[i])
                if layer.kind in DENSE_KINDS:
                    prev = layers[i - 1] if i else None
                    # Over the map before the flatten, or a 1×1 map of a previous dense output.
                    shape = tuple(in_shapes[i - 1]) if prev is not None and prev.kind == "flatten" else shape
                    shape = shape if len(shape) == 3 else (shape[0], 1, 1)
                specs.append((layer, shape, tuple(in_ranges[i]), nxt))
        return specs

    def _balanced(self, layers, in_shapes, in_ranges) -> dict:
        """Default folding: the slowest engine at its fastest within the per-engine LUT
        budget sets the pace; every other engine takes the cheapest folding that keeps up
        (:func:`hwgen.hw.plan.balanced_foldings`), each estimated with its ``weights`` mode.
        User overrides win over these."""
        from .plan import balanced_foldings

        specs = [(*spec, self.folding.get(spec[0].name, {}).get("weights", "rom"))
                 for spec in self._engine_specs(layers, in_shapes, in_ranges)]
        if not specs:
            return {}
        try:
            folds = balanced_foldings(specs, target_cycles=self.target_cycles)
        except (TypeError, ValueError):
            return {}  # the engine itself reports what is wrong with the layer
        return {spec[0].name: ({"pe": pe, "overlap": simd} if spec[0].kind == "winograd_adder_conv2d"
                               else {"pe": pe, "simd": simd}) for spec, (pe, simd) in zip(specs, folds)}

    def _build_stages(self, layers, stages, in_shapes, in_ranges, out_shapes, out_ranges):
        i, n = 0, len(layers)
        pools = []

        def expect(j, kind, after):
            if j >= n or layers[j].kind != kind:
                got = f"layer {layers[j].name!r} of kind {layers[j].kind!r}" if j < n else "the end of the model"
                raise ir.ModelError(f"layer {after.name!r} ({after.kind}) must be followed by a {kind} layer, "
                                    f"found {got}; supported sequences: {SUPPORTED}")
            return layers[j]

        while i < n:
            layer = layers[i]
            if layer.kind in CONV_KINDS:
                rq = expect(i + 1, "requant", layer)
                engine = self._conv(layer, rq, in_shapes[i], in_ranges[i])
                stages.append(_Stage(layer.name, layer.kind, [layer.name, rq.name], engine,
                                     in_shapes[i], out_shapes[i + 1]))
                i += 2
            elif layer.kind in POOL_KINDS:
                # Built once the conv / dense engines are, whose pace sets the pool's lanes:
                # (position among the other stages, layer, in shape, out shape, elem shape).
                pools.append((len(stages), layer, in_shapes[i], out_shapes[i], elem_shape(*in_ranges[i]),
                              elem_shape(*out_ranges[i])))
                i += 1
            elif layer.kind == "flatten":
                dense = layers[i + 1] if i + 1 < n else None
                if dense is None or dense.kind not in DENSE_KINDS:
                    got = f"layer {dense.name!r} of kind {dense.kind!r}" if dense is not None else "the end of the model"
                    raise ir.ModelError(f"layer {layer.name!r} (flatten) must be followed by a dense layer "
                                        f"({', '.join(DENSE_KINDS)}), found {got}; supported sequences: {SUPPORTED}")
                rq = expect(i + 2, "requant", dense)
                in_shape = in_shapes[i]
                if len(in_shape) == 1:
                    in_shape = (in_shape[0], 1, 1)
                engine = self._conv(dense, rq, in_shape, in_ranges[i])
                stages.append(_Stage(dense.name, dense.kind, [layer.name, dense.name, rq.name], engine,
                                     in_shape, out_shapes[i + 2]))
                i += 3
                # Further dense layers, each over the previous one's output as a 1×1 map.
                while i < n and layers[i].kind in DENSE_KINDS:
                    dense = layers[i]
                    rq = expect(i + 1, "requant", dense)
                    in_shape = (in_shapes[i][0], 1, 1)
                    engine = self._conv(dense, rq, in_shape, in_ranges[i])
                    stages.append(_Stage(dense.name, dense.kind, [dense.name, rq.name], engine,
                                         in_shape, out_shapes[i + 1]))
                    i += 2
                if i != n:
                    raise ir.ModelError(f"layer {layers[i].name!r} of kind {layers[i].kind!r} follows the dense "
                                        f"layers; only dense + requant pairs may follow a flatten, the last "
                                        f"ending the model; supported: {SUPPORTED}")
            elif layer.kind == "requant":
                raise ir.ModelError(f"requant layer {layer.name!r} must follow a conv or dense layer (its engine "
                                    f"computes both); supported: {SUPPORTED}")
            elif layer.kind in DENSE_KINDS:
                raise ir.ModelError(f"dense layer {layer.name!r} must follow a flatten layer (or another dense "
                                    f"layer's requant); supported: {SUPPORTED}")
            else:
                raise ir.ModelError(f"layer {layer.name!r} of kind {layer.kind!r} has no hardware engine yet; "
                                    f"supported: {SUPPORTED}")
        self._add_pools(stages, pools)
        if not stages or stages[-1].kind not in DENSE_KINDS:
            raise ir.ModelError(f"the model must end with flatten, a dense layer and a requant to give one beat "
                                f"of class scores per image; supported: {SUPPORTED}")
        classes = out_shapes[-1][0]
        if self.argmax:
            head = ArgmaxHead(classes, elem_shape(*out_ranges[-1]))
            stages.append(_Stage("argmax", "argmax", [], head, (classes,), (classes,)))
        else:
            head = RawHead(classes, elem_shape(*out_ranges[-1]))
            stages.append(_Stage("output", "raw", [], head, (classes,), (classes,)))

        links = [(f"input ({model_channels(self.model)} channels)", _payload_layout(self._input_signature())),
                 *((s.name, _payload_layout(s.engine.signature.members["o"].signature)) for s in stages[:-1])]
        for (src, out_layout), stage in zip(links, stages):
            in_layout = _payload_layout(stage.engine.signature.members["i"].signature)
            if out_layout.length != in_layout.length:
                raise RuntimeError(f"internal error: {src} gives {out_layout.length} channels per beat, "
                                   f"{stage.name} takes {in_layout.length}")
        return stages

    def _add_pools(self, stages, pools):
        """Build the max-pool engines and put them in their places in ``stages``; the choice of
        lanes is recorded in :attr:`auto_folding` (the folding dict's ``lanes`` wins).

        A pool takes the fewest ``lanes`` (channels per cycle, a divisor of ``C``) such that
        (1) its cycles per image do not exceed the pace of the conv / dense engines (the slowest
        of them), and (2) it takes a pixel in no more cycles than its producer can wait for
        (:func:`_beat_period`): a slower pool would stall the producer, however idle on average."""
        pace = max((int(s.engine.cycles_per_image) for s in stages), default=None)
        for k, (pos, layer, in_shape, out_shape, shape, out_elem) in enumerate(pools):
            c, h, w = in_shape
            options = pool_lanes(layer, c)
            if pace is None or (engine_cls(layer) is MaxPoolEngine and layer.size == 1):
                auto = c  # the identity takes a pixel per cycle whatever the lanes
            else:
                period = _beat_period(stages[pos + k - 1]) if pos + k > 0 else None
                auto = next((d for d in options
                             if pool_cycles(layer, (h, w), c, d) <= pace
                             and (period is None or c // d <= period)), options[-1])
            self.auto_folding[layer.name] = {"lanes": auto}
            lanes = self.folding.get(layer.name, {}).get("lanes", auto)
            if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes not in options:
                raise ir.ModelError(f"folding of {layer.name!r}: lanes={lanes!r} must divide its {c} channels; "
                                    f"pick one of {options}")
            engine = pool_engine(layer, c, (h, w), shape, out_elem, lanes)
            stages.insert(pos + k, _Stage(layer.name, layer.kind, [layer.name], engine, in_shape, out_shape))

    def _conv(self, layer, requant, in_shape, in_range):
        from .conv import ConvEngine  # written alongside; imported late so pool/head stand alone
        from .winograd import WinogradEngine

        fold = {**self.auto_folding.get(layer.name, {}), **self.folding.get(layer.name, {})}
        try:
            if layer.kind == "winograd_adder_conv2d":
                return WinogradEngine(layer, requant, tuple(in_shape), tuple(in_range), pe=fold.get("pe"),
                                      overlap=fold.get("overlap"))
            return ConvEngine(layer, requant, tuple(in_shape), tuple(in_range),
                              pe=fold.get("pe"), simd=fold.get("simd"), weights=fold.get("weights", "rom"))
        except (TypeError, ValueError) as e:
            if isinstance(e, ir.ModelError):
                raise
            text = str(e)
            raise ir.ModelError(text if text.startswith(f"{layer.name}:") else f"layer {layer.name!r}: {text}") from None

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


def _beat_period(stage: _Stage) -> int | None:
    """Cycles ``stage``'s engine can leave an output pixel waiting for ``ready`` without losing
    pace (``None``: no limit known), for the lanes of the pool it feeds.

    A conv / dense engine's output register also gathers a pixel's ``groups``: the next
    group's result, ``cycles_per_image / (pixels * groups)`` cycles after the last, stalls the
    engine if the pixel is still there. A Winograd engine sends pixels from a double-buffered
    tile-row memory, gathering each pixel's groups in ``groups + 1`` cycles after the previous
    leaves: it keeps up while a pixel takes no more than ``cycles_per_image / pixels`` cycles in
    all. A max pool delivers a pooled pixel every ``size`` pixels of a row."""
    e = stage.engine
    cycles = int(e.cycles_per_image)
    pixels = int(np.prod(stage.out_shape[1:])) if len(stage.out_shape) == 3 else 1
    if stage.kind == "winograd_adder_conv2d":
        return max(1, cycles // pixels - (int(e.groups) + 1))
    if stage.kind in CONV_KINDS + DENSE_KINDS:
        return max(1, cycles // (pixels * int(e.groups)))
    if isinstance(e, WindowPoolEngine):
        return max(1, cycles // pixels)
    if stage.kind == "maxpool2d":
        return max(1, e.size * cycles // (e.in_hw[0] * e.in_hw[1]))
    return None


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
    ab = index_bits(n) if top.argmax else 0
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "top": name,
        "verilog": f"{name}.v",
        "ports": {
            "pixels": {"channels": c, "bits": b, "payload_width": c * b},
            "result": {"classes": n, "score_bits": sb, "score_signed": bool(top.score_shape.signed),
                       "argmax_offset": n * sb, "argmax_bits": ab, "payload_width": n * sb + ab,
                       "argmax": top.argmax},
        },
        "input_shape": list(model.input_shape),
        "cycles_per_image": top.cycles_per_image,
        "latency_cycles": top.latency_cycles,
        "engines": [s.describe() for s in top.stages],
        "folding": {**top.auto_folding, **top.folding},
        "folding_overrides": top.folding,
        "target_cycles": top.target_cycles,
        "clock": "clk",
        "reset": "rst",
    }


def generate(model: ir.Model, out_dir, folding: dict | None = None, name: str = "hwgen_top",
             target_cycles: int | None = None, argmax: bool = True) -> dict:
    """Elaborate ``model`` (``argmax``: see :class:`Accelerator`) and write ``out_dir/<name>.v`` and ``out_dir/manifest.json``.

    Both files are complete or absent: everything is elaborated before anything is written,
    and each file goes through a temporary file and a rename. The Verilog starts with
    ```timescale 1ns/1ps``. Returns the manifest.
    """
    if not name.isidentifier():
        raise ValueError(f"top-level name {name!r} is not a valid Verilog identifier")
    top = Accelerator(model, folding, target_cycles=target_cycles, argmax=argmax)
    doc = manifest(top, name)
    text = "`timescale 1ns/1ps\n" + verilog.convert(top, name=name, emit_src=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    body = json.dumps(doc, indent=2) + "\n"
    atomic_write(out / f"{name}.v", lambda f: f.write(text))
    atomic_write(out / "manifest.json", lambda f: f.write(body))
    return doc
