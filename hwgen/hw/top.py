"""The accelerator top-level: one streaming engine per layer group, and its Verilog build.

:class:`Accelerator` composes the engines an integer model's plan (:mod:`hwgen.hw.plan`) lists;
:func:`generate` returns its Verilog and its manifest, the contract read by the cocotb testbench
(``sim/``) and the synthesis flow, which the build folder (:mod:`hwgen.buildfolder`) writes.
"""

from __future__ import annotations

from amaranth import Module, unsigned
from amaranth.back import verilog
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import ir
from ..buildfolder import MANIFEST_FORMAT
from . import constructing
from .conv import ConvEngine
from .head import ArgmaxHead, RawHead, index_bits, raw_layout, result_layout
from .plan import SUPPORTED, engine_errors, plan
from .pool import POOL_ENGINES
from .spec import DirectSpec, HeadSpec, WinogradSpec
from .winograd import WinogradEngine

__all__ = ["Accelerator", "generate", "MANIFEST_FORMAT", "MANIFEST_VERSION", "SUPPORTED"]

MANIFEST_VERSION = 1

#: The engine built from each type of spec.
ENGINES = {DirectSpec: ConvEngine, WinogradSpec: WinogradEngine, **POOL_ENGINES,
           HeadSpec: ArgmaxHead}
#: The head of a :class:`~hwgen.hw.spec.HeadSpec`, by its ``argmax`` flag.
HEADS = {True: ArgmaxHead, False: RawHead}


def engine_class(spec) -> type:
    """The engine class built from ``spec`` (:data:`ENGINES`, :data:`HEADS` for the head)."""
    return HEADS[spec.argmax] if isinstance(spec, HeadSpec) else ENGINES[type(spec)]


class _Stage:
    """One engine of the pipeline and what the manifest says about it."""

    def __init__(self, spec, engine):
        self.spec, self.engine = spec, engine
        self.name, self.kind, self.layers = spec.name, spec.kind, list(spec.layers)
        self.in_shape, self.out_shape = tuple(spec.in_shape), tuple(spec.out_shape)

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
        padded windows a :class:`~hwgen.hw.pool.WindowPoolEngine`), ``sumpool2d`` (a
        :class:`~hwgen.hw.pool.WindowPoolEngine`), ``global_sumpool2d``
        (:class:`~hwgen.hw.pool.GlobalSumPoolEngine`); ``flatten`` and a
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
        default the fewest that slow down no engine); ``{"pe": int, "overlap": 0 | 1}`` for
        Winograd-adder layers.  The planner (:func:`hwgen.hw.plan.plan`) chooses every other
        folding; ``plan`` is its result.
    target_cycles : int or None
        The pace of the planner's foldings (cycles per image; default: the fastest that fits).
    argmax : bool
        Keyword, default True: an :class:`~hwgen.hw.head.ArgmaxHead` ends the pipeline.  False:
        the output is not a classification, and the last layer's values leave as they are
        (:class:`~hwgen.hw.head.RawHead`, no argmax field).

    Members
    -------
    pixels : ``In(stream.Signature(data.ArrayLayout(unsigned(input_bits), C)))``
        Input pixels, raster order, all ``C`` channels per beat (channel 0 in the LSBs),
        images back to back. Verilog ports ``pixels__payload``, ``pixels__valid``,
        ``pixels__ready``.
    result : ``Out(stream.Signature(result_layout(classes, score_shape)))``
        One beat per image: ``scores`` (class 0 in the LSBs) then ``argmax``; with
        ``argmax=False``, ``raw_layout(classes, score_shape)``: the scores only.

    Throughput is :attr:`cycles_per_image` (the slowest engine); see :attr:`latency_cycles`.

    Raises :class:`hwgen.ir.ModelError` for a layer kind or sequence without an engine.
    """

    def __init__(self, model: ir.Model, folding: dict | None = None, *,
                 target_cycles: int | None = None, argmax: bool = True):
        with constructing(self):
            if not isinstance(argmax, bool):
                raise TypeError(f"argmax must be a bool, not {argmax!r}")
            self.argmax = argmax
            if not isinstance(model, ir.Model):
                raise TypeError(f"model must be an hwgen.ir.Model, not {type(model).__name__}")
            if not model.is_chain:
                raise ir.ModelError(f"model {model.name!r} is a graph, not a chain of layers; the "
                                    f"hardware builds chains only (no engine joins two tensors yet)")
            self.model = model
            self.plan = plan(model, folding, target_cycles=target_cycles, argmax=argmax)
            self.target_cycles = target_cycles
            #: The user's overrides, validated; and the planner's own choice of every engine.
            self.folding = self.plan.overrides
            self.auto_folding = {k: f.as_dict() for k, f in self.plan.auto.items()}
            self.stages = self._build(self.plan.specs)
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

    def _build(self, specs) -> list[_Stage]:
        """One engine per spec, built as planned, then the head; the links checked."""
        stages = []
        try:
            for spec in specs:
                with engine_errors(spec.name):
                    stages.append(_Stage(spec, engine_class(spec).from_spec(spec)))
        except BaseException:
            for stage in stages:  # built before the error; not forgotten, just abandoned
                stage.engine._MustUse__silence = True
            raise
        links = [(f"input ({model_channels(self.model)} channels)", _payload_layout(self._input_signature())),
                 *((s.name, _payload_layout(s.engine.signature.members["o"].signature)) for s in stages[:-1])]
        for (src, out_layout), stage in zip(links, stages):
            in_layout = _payload_layout(stage.engine.signature.members["i"].signature)
            if out_layout.length != in_layout.length:
                raise RuntimeError(f"internal error: {src} gives {out_layout.length} channels per beat, "
                                   f"{stage.name} takes {in_layout.length}")
        return stages

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
        "folding": {k: f.as_dict() for k, f in top.plan.foldings.items()},
        "folding_overrides": top.folding,
        "target_cycles": top.target_cycles,
        "clock": "clk",
        "reset": "rst",
    }


def generate(model: ir.Model, *, folding: dict | None = None, name: str = "hwgen_top",
             target_cycles: int | None = None, argmax: bool = True) -> tuple[str, dict]:
    """Plan and elaborate ``model``: ``(Verilog text, manifest)``, written by the build folder
    (:meth:`hwgen.buildfolder.BuildFolder.write_design`).  The Verilog starts with
    ```timescale 1ns/1ps``; the manifest names it ``<name>.v``.  ``argmax``: see
    :class:`Accelerator`."""
    if not name.isidentifier():
        raise ValueError(f"top-level name {name!r} is not a valid Verilog identifier")
    top = Accelerator(model, folding, target_cycles=target_cycles, argmax=argmax)
    doc = manifest(top, name)
    return "`timescale 1ns/1ps\n" + verilog.convert(top, name=name, emit_src=False), doc
