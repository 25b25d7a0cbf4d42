"""The result head: class scores in, scores and their argmax out."""

from __future__ import annotations

from amaranth import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..ir import ceil_log2
from . import constructing

__all__ = ["ArgmaxHead", "result_layout"]


def result_layout(classes: int, score_shape) -> data.StructLayout:
    """Payload of the accelerator's result stream: ``scores`` (LSB first), then ``argmax``."""
    return data.StructLayout({
        "scores": data.ArrayLayout(score_shape, classes),
        "argmax": unsigned(ceil_log2(classes)),
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
        One beat per image: the last layer's 1×1×n output.
    result : ``Out(stream.Signature(result_layout(classes, score_shape)))``
        The scores unchanged and ``argmax``, ``ceil_log2(classes)`` bits.

    Timing
    ------
    A pipelined comparator tree, one register per tree level: latency
    ``max(1, ceil(log2(classes)))`` cycles, one image per cycle. The whole pipeline stalls
    while ``result`` is valid and not ready (``i.ready = ~result.valid | result.ready``).
    """

    def __init__(self, classes: int, score_shape):
        with constructing(self):
            if not isinstance(classes, int) or classes < 1:
                raise TypeError(f"classes must be a positive integer, not {classes!r}")
        self.classes = classes
        self.score_shape = Shape.cast(score_shape)
        self.index_bits = ceil_log2(classes)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(score_shape, classes))),
            "result": Out(stream.Signature(result_layout(classes, score_shape))),
        })

    @property
    def levels(self) -> int:
        return (self.classes - 1).bit_length()

    @property
    def latency(self) -> int:
        return max(1, self.levels)

    cycles_per_image = 1

    @property
    def params(self) -> dict:
        return {"classes": self.classes, "score_bits": self.score_shape.width,
                "score_signed": self.score_shape.signed, "latency": self.latency}

    def elaborate(self, platform):
        m = Module()
        advance = Signal()
        m.d.comb += [
            advance.eq(~self.result.valid | self.result.ready),
            self.i.ready.eq(advance),
        ]

        valid = self.i.valid
        scores = self.i.payload
        cands = [(scores[c], c) for c in range(self.classes)]
        for level in range(self.latency):
            # Pair neighbours; the left one has the lower index, so it wins ties.
            nxt = []
            for j in range(0, len(cands), 2):
                if j + 1 == len(cands):
                    nxt.append(cands[j])
                    continue
                (va, ia), (vb, ib) = cands[j], cands[j + 1]
                nxt.append((Mux(vb > va, vb, va), Mux(vb > va, ib, ia)))
            r_valid = Signal(name=f"l{level}_valid")
            r_scores = Signal(scores.shape(), name=f"l{level}_scores")
            regs = []
            for j, (v, i) in enumerate(nxt):
                rv = Signal(self.score_shape, name=f"l{level}_v{j}")
                ri = Signal(self.index_bits, name=f"l{level}_i{j}")
                with m.If(advance):
                    m.d.sync += [rv.eq(v), ri.eq(i)]
                regs.append((rv, ri))
            with m.If(advance):
                m.d.sync += [r_valid.eq(valid), r_scores.eq(scores)]
            valid, scores, cands = r_valid, r_scores, regs

        assert len(cands) == 1
        m.d.comb += [
            self.result.valid.eq(valid),
            self.result.payload.scores.eq(scores),
            self.result.payload.argmax.eq(cands[0][1]),
        ]
        return m
