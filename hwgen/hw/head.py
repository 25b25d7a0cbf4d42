"""The result head: class scores in, scores and their argmax out."""

from __future__ import annotations

from amaranth import Const, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from amaranth.utils import ceil_log2

from . import constructing, elem_shape

__all__ = ["ArgmaxHead", "RawHead", "result_layout", "raw_layout", "index_bits"]


def index_bits(classes: int) -> int:
    """Bits of the argmax index of ``classes`` scores: ``ceil_log2(classes)``, at least 1."""
    return max(1, ceil_log2(classes))


def result_layout(classes: int, score_shape) -> data.StructLayout:
    """Payload of the accelerator's result stream: ``scores`` (LSB first), then ``argmax``."""
    return data.StructLayout({
        "scores": data.ArrayLayout(score_shape, classes),
        "argmax": unsigned(index_bits(classes)),
    })


class ArgmaxHead(wiring.Component):
    """Index of the largest class score, first maximum wins (like :func:`numpy.argmax`).

    Parameters
    ----------
    classes : int
        Number of class scores ``n``.
    score_shape : ShapeLike
        Shape of one score (signed or unsigned).

    Members
    -------
    i : ``In(stream.Signature(data.ArrayLayout(score_shape, classes)))``
        One beat per image: the last layer's 1×1×n output. The source must hold ``payload``
        stable while ``valid`` is asserted and ``ready`` is not (the usual stream rule): the
        head reads the beat in place instead of copying it.
    result : ``Out(stream.Signature(result_layout(classes, score_shape)))``
        The scores unchanged and ``argmax``, ``index_bits(classes)`` bits.

    Timing
    ------
    Sequential: one comparator scans the waiting beat's scores, one per cycle, keeping the
    running maximum and its index (``score_shape`` plus ``index_bits(classes)`` bits of state).
    ``result`` becomes valid ``n - 1`` cycles after ``i`` does (latency ``n - 1``; 0 for one
    class), its ``scores`` are ``i.payload`` itself and its ``argmax`` is combinational from the
    last comparison. ``i.ready`` is ``result.ready`` in that last cycle and 0 before it, so the
    input beat and the result leave together: ``n`` cycles per image.
    """

    def __init__(self, classes: int, score_shape):
        with constructing(self):
            if not isinstance(classes, int) or classes < 1:
                raise TypeError(f"classes must be a positive integer, not {classes!r}")
        self.classes = classes
        self.score_shape = Shape.cast(score_shape)
        self.index_bits = index_bits(classes)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(score_shape, classes))),
            "result": Out(stream.Signature(result_layout(classes, score_shape))),
        })

    @classmethod
    def from_spec(cls, spec) -> "ArgmaxHead":
        """The head of a :class:`~hwgen.hw.spec.HeadSpec`: its scores in its ``in_range``."""
        return cls(spec.in_shape[0], elem_shape(*spec.in_range))

    @property
    def latency(self) -> int:
        return self.classes - 1

    @property
    def cycles_per_image(self) -> int:
        return self.classes

    @property
    def params(self) -> dict:
        return {"classes": self.classes, "score_bits": self.score_shape.width,
                "score_signed": self.score_shape.signed, "latency": self.latency}

    def elaborate(self, platform):
        m = Module()
        n = self.classes
        scores = self.i.payload
        m.d.comb += [
            self.result.payload.scores.eq(scores),
            self.i.ready.eq(self.result.valid & self.result.ready),
        ]
        # Index of the score compared this cycle; scores 0 .. at-1 are folded into best/best_at.
        at = Signal(range(n))
        best = Signal(self.score_shape)
        best_at = Signal(self.index_bits)
        cur = scores[at]
        # Strictly greater, scanning upwards: the first maximum wins ties.
        take = (at == 0) | (cur > best)
        last = at == Const(n - 1, at.shape())
        m.d.comb += [
            self.result.valid.eq(self.i.valid & last),
            self.result.payload.argmax.eq(Mux(cur > best, at, best_at)),
        ]
        with m.If(self.i.valid & ~last):
            m.d.sync += at.eq(at + 1)
            with m.If(take):
                m.d.sync += [best.eq(cur), best_at.eq(at)]
        with m.If(self.i.ready & self.i.valid):
            m.d.sync += at.eq(0)
        return m


def raw_layout(outputs: int, score_shape) -> data.StructLayout:
    """Payload of a raw-output accelerator's result stream: the ``outputs`` values (LSB first),
    no argmax: :func:`result_layout` without its last field."""
    return data.StructLayout({"scores": data.ArrayLayout(score_shape, outputs)})


class RawHead(wiring.Component):
    """The end of a pipeline whose output is not a classification: the last layer's values
    leave as they are, one beat per image (no argmax).

    Members
    -------
    i : ``In(stream.Signature(data.ArrayLayout(score_shape, outputs)))``
    result : ``Out(stream.Signature(raw_layout(outputs, score_shape)))``
        ``i`` itself, combinationally (payload, valid and ready pass through).

    Latency 0; one beat per cycle.
    """

    latency = 0
    cycles_per_image = 1

    def __init__(self, outputs: int, score_shape):
        with constructing(self):
            if not isinstance(outputs, int) or outputs < 1:
                raise TypeError(f"outputs must be a positive integer, not {outputs!r}")
        self.classes = outputs
        self.score_shape = Shape.cast(score_shape)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(score_shape, outputs))),
            "result": Out(stream.Signature(raw_layout(outputs, score_shape))),
        })

    @classmethod
    def from_spec(cls, spec) -> "RawHead":
        """The head of a :class:`~hwgen.hw.spec.HeadSpec` with ``argmax`` False."""
        return cls(spec.in_shape[0], elem_shape(*spec.in_range))

    @property
    def params(self) -> dict:
        return {"outputs": self.classes, "score_bits": self.score_shape.width,
                "score_signed": self.score_shape.signed, "latency": 0}

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [
            self.result.payload.scores.eq(self.i.payload),
            self.result.valid.eq(self.i.valid),
            self.i.ready.eq(self.result.ready),
        ]
        return m
