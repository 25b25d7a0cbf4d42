"""The streaming conv / dense engine of every lane kind (l1, shift, mac): line buffers, PE array,
requantization."""

from __future__ import annotations

import numpy as np
from amaranth import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import ir
from . import constructing, divisors
from .pe import PE, Lane
from .requant import Requant, requant_shape
from .window import WindowGenerator, tap_order, valid_simd

__all__ = ["ConvEngine", "choose_folding", "conv_candidates", "conv_cycles", "estimate_luts",
           "as_conv", "conv_stride", "input_cycles", "lane_op",
           "make_lane", "acc_range", "CONV_KINDS", "DENSE_KINDS", "WEIGHT_MODES"]

#: Most line-buffer read ports a default folding uses (each is a block-RAM copy on iCE40).
MAX_PORTS = 3
#: Weight ROMs of at least this many bits are put in block RAM.
ROM_BLOCK_BITS = 1024
#: Default LUT budget of one engine (iCE40 UP5K: 5280 LUTs for the whole accelerator).
LUT_BUDGET = 1200


def _shape(lo: int, hi: int) -> Shape:
    width, is_signed = ir.bits_for(lo, hi)
    return Shape(width, is_signed)


def check_io(layer, requant, outputs: int, in_range) -> tuple[int, int]:
    """The checks every conv-like engine makes of its requantizer and input interval:
    ``requant`` has one channel per output, ``in_range`` is not empty.  Returns ``(lo, hi)``."""
    if len(requant.mult) != outputs:
        raise ValueError(f"{requant.name}: {len(requant.mult)} channels, {layer.name} has {outputs} outputs")
    lo, hi = (int(v) for v in in_range)
    if lo > hi:
        raise ValueError(f"empty in_range {in_range}")
    return lo, hi


#: Layer kinds the engine computes, by lane operation.
CONV_KINDS = {"adder_conv2d": "l1", "shift_conv2d": "shift", "conv2d": "mac"}
#: Dense layer kinds the engine computes (as an H×W conv with a 1×1 output), by lane operation.
DENSE_KINDS = {"adder_dense": "l1", "shift_dense": "shift", "dense": "mac"}
#: How an engine holds its weights (see :class:`ConvEngine`).
WEIGHT_MODES = ("rom", "const")


def lane_op(layer) -> str:
    """The :class:`~hwgen.hw.pe.Lane` operation of a conv or dense layer: ``l1`` (AdderNet),
    ``shift`` (DeepShift) or ``mac`` (multiplier)."""
    kind = getattr(layer, "kind", None)
    if kind in CONV_KINDS:
        return CONV_KINDS[kind]
    if kind in DENSE_KINDS:
        return DENSE_KINDS[kind]
    raise TypeError(f"ConvEngine computes {', '.join([*CONV_KINDS, *DENSE_KINDS])} layers, not "
                    f"{kind or type(layer).__name__!r}")


def as_conv(layer, in_shape) -> tuple[np.ndarray, int]:
    """``(weight (O, C, KH, KW), padding)`` of a conv layer, or of a dense layer over a
    ``C×H×W`` map (PyTorch's flatten order ``(c, h, w)`` makes it an ``H×W`` convolution
    without padding and a ``1×1`` output).  Any of :data:`CONV_KINDS` and :data:`DENSE_KINDS`;
    a shift layer's weight is its derived ``sign << shift``.  The stride is :func:`conv_stride`."""
    kind = getattr(layer, "kind", None)
    if kind in CONV_KINDS:
        layer.out_shape(tuple(in_shape))  # validates channels and sizes
        return layer.weight, int(layer.padding)
    if kind in DENSE_KINDS:
        if len(in_shape) != 3:
            raise ValueError(f"{layer.name}: the conv engine runs a dense layer over a C×H×W map, "
                             f"got input shape {tuple(in_shape)}")
        c, h, w = in_shape
        o, k = layer.weight.shape
        if k != c * h * w:
            raise ValueError(f"{layer.name}: weight takes {k} inputs, the {c}×{h}×{w} map has {c * h * w}")
        return layer.weight.reshape(o, c, h, w), 0
    lane_op(layer)  # raises the TypeError naming the kinds
    raise AssertionError("unreachable")


def conv_stride(layer) -> int:
    """The stride of a conv layer's window; 1 for a dense layer (one window over the map)."""
    return int(getattr(layer, "stride", 1))


def input_cycles(in_shape, simd: int) -> int:
    """Cycles the window takes to accept one image: a pixel per cycle, or per ``C / simd``
    cycles when a beat takes a slice of a pixel.  No engine is faster than its input; with a
    stride above 1 (fewer output pixels than input pixels) this is often the bound."""
    c, h, w = in_shape
    return h * w * max(1, c // simd)


def _lane_weights(layer, weight: np.ndarray):
    """What :meth:`~hwgen.hw.pe.Lane.encode` takes per tap, shaped like ``weight``: the weight,
    or for a shift layer its ``(sign, shift)`` pair (an array with a trailing axis of 2)."""
    if lane_op(layer) == "shift":
        sign = layer.sign.reshape(weight.shape)
        shift = np.where(sign != 0, layer.shift.reshape(weight.shape), 0)
        return np.stack([sign, shift], axis=-1)
    return weight


def pack_words(words: np.ndarray, width: int) -> list[int]:
    """ROM words from raw lane words ``(depth, ...)``: word ``a`` packs ``words[a]`` flattened,
    the first in the LSBs, ``width`` bits each."""
    out = []
    for row in words:
        word = 0
        for pos, v in enumerate(np.asarray(row).reshape(-1)):
            word |= int(v) << (pos * width)
        out.append(word)
    return out


def _x_range(padding, in_range):
    lo, hi = (int(v) for v in in_range)
    return (min(lo, 0), max(hi, 0)) if padding else (lo, hi)


def make_lane(layer, weight: np.ndarray, padding: int, in_range) -> Lane:
    """The lane of a layer's PEs: its op, the input range (with the 0 of padding) and the
    exact weight range; a shift lane's barrel shifter reaches the largest exponent used."""
    op = lane_op(layer)
    w_range = (int(weight.min()), int(weight.max()))
    x_range = _x_range(padding, in_range)
    if op == "shift":
        used = layer.shift[layer.sign != 0]
        return Lane(op, x_range, w_range, max_shift=int(used.max()) if used.size else 0)
    return Lane(op, x_range, w_range)


def acc_range(op: str, weight: np.ndarray, x_range) -> tuple[int, int]:
    """The subset-sum bound of a layer's PE: over the outputs ``o``,
    ``Σ_k min(0, tmin_ok) .. Σ_k max(0, tmax_ok)`` with ``[tmin_ok, tmax_ok]`` the range of the
    term of tap ``k`` (``|x - w|`` for ``l1``, ``x * w`` otherwise) over ``x`` in ``x_range``.
    Every partial sum of one output's terms, in any order, lies in it."""
    w = weight.reshape(weight.shape[0], -1).astype(np.int64)
    lo, hi = x_range
    if op == "l1":
        tmin, tmax = ir.abs_diff_range(w, lo, hi)
    else:
        a, b = w * lo, w * hi
        tmin, tmax = np.minimum(a, b), np.maximum(a, b)
    return int(np.minimum(tmin, 0).sum(axis=1).min()), int(np.maximum(tmax, 0).sum(axis=1).max())


def _check_weights(layer, weights):
    if weights not in WEIGHT_MODES:
        raise ValueError(f"{layer.name}: weights={weights!r}; use 'rom' (a weight memory read in step "
                         f"with the window) or 'const' (constants in the logic)")


def requant_slots(requant) -> int:
    """Cycles the requantizer spends on one value: the most digits of a multiplier."""
    if requant is None:
        return 3
    return max(1, max(len(ir.csd(int(v))) for v in requant.mult))


def requant_bits(requant) -> int:
    return requant.out_bits if requant is not None else 8


def _lane_luts(lane: Lane, addresses: int, weights: str) -> tuple[int, int]:
    """Rough LUT4s of one lane, and the bits of its term (for the tree)."""
    xb = lane.x_shape.width
    tb = ir.bits_for(*lane.term_range)[0]
    if lane.op == "l1":
        # Subtract, absolute value: the estimate the digits layers were measured with.
        db = lane.diff_shape.width
        cost = db + tb
    elif lane.op == "shift":
        # One 2:1 mux per bit of each barrel stage, the conditional negate over the term;
        # constant weights at one address leave wiring and, for a negative weight, the negate.
        xlo, xhi = lane.x_range
        # ABC merges consecutive 2:1 stages into 4:1 muxes: about half a LUT4 per stage bit
        # (calibrated on the digits shift model, UP5K: the full estimate was ~2x the real count).
        stages = sum(ir.bits_for(min(xlo, xlo << r), max(xhi, xhi << r))[0]
                     for r in (min(lane.max_shift, (1 << (j + 1)) - 1) for j in range(lane.stages))) // 2
        neg = tb if lane.w_range[0] < 0 else 0
        cost = neg // 2 if weights == "const" and addresses == 1 else stages + neg
    else:
        # A multiplier in LUTs (no DSPs assumed: HX8K has none, UP5K only 8): about one LUT
        # per partial-product bit; a constant one has about half the partial products.
        wb = Shape.cast(lane.w_layout).width
        cost = xb * wb // 2 if weights == "const" and addresses == 1 else xb * wb
    if weights == "const" and addresses > 1:
        # The constant table: each weight bit is a function of the address (4 bits per LUT4).
        cost += lane.w_width * max(1, addresses // 16)
    return cost, tb


def estimate_luts(layer, in_shape, in_range, requant: ir.Requant | None, pe: int, simd: int,
                  weights: str = "rom") -> int:
    """Rough iCE40 LUT4 count of an engine (for choosing the folding, not a report)."""
    weight, padding = as_conv(layer, in_shape)
    o, c, kh, kw = weight.shape
    lane = make_lane(layer, weight, padding, in_range)
    x_range = lane.x_range
    xb = lane.x_shape.width
    accb = ir.bits_for(*acc_range(lane.op, weight, x_range))[0]
    groups = o // pe
    steps = c * kh * kw // simd
    lane_cost, tb = _lane_luts(lane, groups * steps, weights)
    tree = (simd - 1) * (tb + max(1, (simd - 1).bit_length()) // 2 + 1)
    terms = requant.max_terms if requant is not None else 3
    maxp = max((p for m in (requant.mult if requant is not None else [255]) for _, p in ir.csd(int(m))),
               default=0)
    # Sequential requantizer: one adder over the sum, one shifter unless a single constant
    # digit, the clamp.
    rq = 2 * (accb + maxp) + 2 * requant_bits(requant)
    if groups > 1 or terms > 1:
        rq += (accb + maxp) * max(1, maxp.bit_length()) // 2
    ports = max(1, simd // c)
    slices = max(1, c // simd)
    # Line-buffer read muxes and addressing, the schedule's counters, the output gather: a
    # fixed part measured with Yosys (synth_ice40 -noabc) on the digits layers.
    window = simd * xb * max(0, slices - 1).bit_length() + ports * 40 + 300 + 2 * o * requant_bits(requant)
    return int(pe * (simd * lane_cost + tree + accb + rq) + window)


def _out_hw(layer, in_shape) -> tuple[int, int]:
    if getattr(layer, "kind", None) in CONV_KINDS:
        return tuple(layer.out_shape(tuple(in_shape))[1:])
    return 1, 1


def conv_cycles(layer, in_shape, requant, pe: int, simd: int) -> int:
    """Cycles per image of a :class:`ConvEngine` folded by ``(pe, simd)`` (see its Timing): the
    compute, or the input (:func:`input_cycles`) when that is slower."""
    weight, _ = as_conv(layer, in_shape)
    o, c, kh, kw = weight.shape
    oh, ow = _out_hw(layer, in_shape)
    return max(oh * ow * (o // pe) * max(c * kh * kw // simd, requant_slots(requant)),
               input_cycles(in_shape, simd))


def conv_candidates(layer, in_shape, in_range, requant,
                    weights="rom") -> list[tuple[int, int, int, int]]:
    """``(cycles per image, estimated LUTs, pe, simd)`` of every folding of a
    :class:`ConvEngine` (with ``weights``): ``pe`` divides the output channels, ``simd`` is one
    of :func:`hwgen.hw.window.valid_simd` with at most :data:`MAX_PORTS` read ports."""
    weight, _ = as_conv(layer, in_shape)
    o, c, kh, kw = weight.shape
    out = []
    for pe in divisors(o):
        for simd in valid_simd(c, kh * kw):
            if max(1, simd // c) > MAX_PORTS:
                continue
            out.append((conv_cycles(layer, in_shape, requant, pe, simd),
                        estimate_luts(layer, in_shape, in_range, requant, pe, simd, weights), pe, simd))
    return out


def choose_folding(cands, lut_budget: int = LUT_BUDGET, target_cycles: int | None = None):
    """The two folding parameters of the chosen one of ``cands``, a list of ``(cycles per image,
    estimated LUTs, a, b)``.

    Without ``target_cycles``: the fastest folding (fewest cycles per image) that fits
    ``lut_budget``, the cheapest among equals. With ``target_cycles`` (the pipeline's
    bottleneck, see :func:`hwgen.hw.plan.balanced_foldings`): the cheapest folding that reaches
    it within the budget, else the fastest that fits. If nothing fits, the cheapest that reaches
    ``target_cycles`` (if given and reachable), else the cheapest of all."""
    fit = [cand for cand in cands if cand[1] <= lut_budget]
    if not fit:
        # Over budget whatever the folding: the cheapest that still keeps the pace, if any.
        paced = [cand for cand in cands if target_cycles is not None and cand[0] <= target_cycles]
        best = min(paced or cands, key=lambda t: (t[1], t[0]))
    elif target_cycles is not None and any(cand[0] <= target_cycles for cand in fit):
        best = min((cand for cand in fit if cand[0] <= target_cycles), key=lambda t: (t[1], t[0]))
    else:
        best = min(fit, key=lambda t: (t[0], t[1]))
    return best[2], best[3]


class ConvEngine(wiring.Component):
    """Convolution (or dense layer) + fused per-channel requantization, streaming.

    ``y[o, oy, ox] = requant_o(Σ_{c,ky,kx} term(x[c, oy*S+ky-pad, ox*S+kx-pad], w[o, c, ky, kx]))``,
    any stride ``S``, zero padding (a padded 0 is a tap like any other, as in :mod:`hwgen.golden`), the
    term chosen by the layer (:func:`lane_op`): ``-|x - w|`` for AdderNet (``adder_conv2d``,
    ``adder_dense``), ``sign * (x << shift)`` for DeepShift (``shift_conv2d``, ``shift_dense``),
    ``x * w`` for the multiplier baseline (``conv2d``, ``dense``).  A dense layer over a
    ``C×H×W`` map runs as an ``H×W`` convolution without padding (:func:`as_conv`), giving one
    ``O``-channel pixel per image.

    Structure: a :class:`~hwgen.hw.window.WindowGenerator` (line buffers) issues ``simd`` taps
    per cycle; ``pe`` :class:`~hwgen.hw.pe.PE` compute ``pe`` output channels in parallel, their
    weights read in step with the window; one :class:`~hwgen.hw.requant.Requant` per PE (with
    ``negate`` for the l1 magnitude); the ``O`` results of a pixel are gathered and leave as
    one beat.

    Parameters
    ----------
    layer : a conv or dense layer of :mod:`hwgen.ir` (:data:`CONV_KINDS`, :data:`DENSE_KINDS`)
    requant : :class:`hwgen.ir.Requant`  with ``O`` channels.
    in_shape : (C, H, W)
    in_range : (int, int)
        Exact interval of the input values (``model.in_ranges()``), signed or unsigned; sets the
        input shape.
    pe, simd : int
        Output channels in parallel (divides ``O``) and taps per PE per cycle (one of
        :func:`~hwgen.hw.window.valid_simd`): the :class:`~hwgen.hw.spec.DirectFolding` the
        planner (:mod:`hwgen.hw.plan`) chose; :meth:`from_spec` builds the engine of a spec.
    weights : ``"rom"`` (default) or ``"const"``
        ``rom``: one :class:`~amaranth.lib.memory.Memory` word of ``pe*simd`` weight words per
        beat, read at the window's ``w_addr`` (block RAM when large); a shift lane's barrel
        shifter takes its exponent from it at run time.  ``const``: each lane's weights are
        constants selected by a ``Switch`` on the (registered) address, and a lane whose weight
        is the same at every address gets a plain constant, so synthesis folds it into the lane:
        a shift lane becomes wiring (and a negate) plus a small mux, no mux at all at full
        parallelism (one group, one step); a mac lane a constant multiplier; an l1 lane
        ``|x - c|``.  Both compute the same numbers.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(bits_for(*in_range), C)))``
    o : ``Out(stream.Signature(ArrayLayout(requant_shape(requant), O)))``
        Pixels in raster order, images back to back.

    Timing
    ------
    ``cycles_per_image = max(OH*OW * (O/pe) * max(C*KH*KW/simd, slots), H*W*max(1, C/simd))``
    when neither stream stalls (the second term: the input, :func:`input_cycles`), ``slots``
    (:func:`requant_slots`, at most ``max_terms``) the cycles the sequential
    requantizer spends on one value: it works while the next value accumulates, and stalls the
    PEs only when a pass is shorter.  ``latency`` (from the beat issuing an output's last taps
    to its ``o.valid``): ``1 + PE.latency + slots + 1`` cycles, whatever the lane and weights
    mode.  The output register is also the gather of a pixel's groups: a group finished while
    the previous pixel still waits in it stalls the engine.  The input is accepted at up to one
    pixel per cycle while the line buffer has a free row.
    """

    def __init__(self, layer, requant: ir.Requant, in_shape: tuple[int, int, int], in_range: tuple[int, int],
                 *, pe: int, simd: int, weights: str = "rom"):
        # A half-built engine is no forgotten elaboratable (no UnusedElaboratable warning).
        with constructing(self):
            if not isinstance(requant, ir.Requant):
                raise TypeError(f"requant must be an hwgen.ir.Requant, not {type(requant).__name__}")
            if len(in_shape) != 3:
                raise ValueError(f"in_shape must be (C, H, W), got {tuple(in_shape)}")
            in_shape = tuple(int(v) for v in in_shape)
            weight, padding = as_conv(layer, in_shape)
            _check_weights(layer, weights)
            o, c, kh, kw = weight.shape
            lo, hi = check_io(layer, requant, o, in_range)
            if not isinstance(pe, int) or isinstance(pe, bool) or pe < 1 or o % pe:
                raise ValueError(f"{layer.name}: pe={pe!r} must divide the {o} output channels "
                                 f"(one of {divisors(o)})")
            if simd not in valid_simd(c, kh * kw) or isinstance(simd, bool):
                raise ValueError(f"{layer.name}: simd={simd!r} does not fold a {c}-channel {kh}×{kw} "
                                 f"window; pick one of {valid_simd(c, kh * kw)}")
            self.layer, self.requant = layer, requant
            self.in_shape, self.in_range = in_shape, (lo, hi)
            self.weight, self.padding = weight, padding
            self.pe, self.simd, self.weights = pe, simd, weights
            self.groups = o // pe
            self.steps = c * kh * kw // simd
            _, h, w = in_shape
            self.stride = conv_stride(layer)
            self.out_hw = _out_hw(layer, in_shape)
            self.lane = make_lane(layer, weight, padding, (lo, hi))
            self.op = self.lane.op
            self.x_range, self.w_range = self.lane.x_range, self.lane.w_range
            self.acc_range = acc_range(self.op, weight, self.x_range)
            if self.op == "l1":
                # The PE delivers the magnitude of -Σ|x - w|; the requantizer negates.
                self.rq_range = self.acc_range
            else:
                o_lo, o_hi = ir._mac_range(weight.reshape(o, -1), *self.x_range)
                self.rq_range = (o_lo, o_hi)
            self.in_elem = _shape(lo, hi)
            self.w_width = self.lane.w_width
            self.out_elem = requant_shape(requant)
            self.pe_latency = 2 + max(0, (simd - 1).bit_length())
            self.rq_slots = requant_slots(requant)
            self.latency = 1 + self.pe_latency + self.rq_slots + 1
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(self.in_elem, c))),
            "o": Out(stream.Signature(data.ArrayLayout(self.out_elem, o))),
        })

    @classmethod
    def from_spec(cls, spec) -> "ConvEngine":
        """The engine of a :class:`~hwgen.hw.spec.DirectSpec`, folded as it says."""
        f = spec.folding
        return cls(spec.layer, spec.requant, spec.in_shape, spec.in_range, pe=f.pe, simd=f.simd,
                   weights=f.weights)

    @property
    def acc_max(self) -> int:
        """Largest magnitude of an l1 engine's sum (the upper end of :attr:`acc_range`)."""
        return self.acc_range[1]

    @property
    def cycles_per_image(self) -> int:
        return max(self.out_hw[0] * self.out_hw[1] * self.groups * max(self.steps, self.rq_slots),
                   input_cycles(self.in_shape, self.simd))

    @property
    def params(self) -> dict:
        return {
            "pe": self.pe, "simd": self.simd, "weights": self.weights, "lane": self.op,
            "stride": self.stride, "groups": self.groups, "steps": self.steps,
            "in_bits": self.in_elem.width, "weight_bits": self.w_width,
            "acc_bits": ir.bits_for(*self.acc_range)[0], "out_bits": self.out_elem.width,
            "latency": self.latency, "cycles_per_image": self.cycles_per_image,
        }

    def lane_words(self) -> np.ndarray:
        """Raw lane weight words (:meth:`~hwgen.hw.pe.Lane.encode`), ``(groups*steps, pe, simd)``:
        address ``g*steps + s`` holds, for PE ``p`` and lane ``l``, the weight of output
        ``g*pe + p`` at tap ``s*simd + l`` of :func:`~hwgen.hw.window.tap_order`."""
        o, c, kh, kw = self.weight.shape
        spec = _lane_weights(self.layer, self.weight)
        taps = tap_order(c, kh, kw)
        words = np.zeros((self.groups * self.steps, self.pe, self.simd), dtype=object)
        for g in range(self.groups):
            for s in range(self.steps):
                for p in range(self.pe):
                    for lane in range(self.simd):
                        ky, kx, ch = taps[s * self.simd + lane]
                        words[g * self.steps + s, p, lane] = self.lane.encode(spec[g * self.pe + p, ch, ky, kx])
        return words

    def weight_rom(self) -> list[int]:
        """ROM words (``weights="rom"``): word ``a`` packs :meth:`lane_words` ``[a]``, PE 0 lane 0
        in the LSBs, ``w_width`` bits each."""
        return pack_words(self.lane_words(), self.w_width)

    def elaborate(self, platform):
        m = Module()
        c, h, w = self.in_shape
        o = self.weight.shape[0]
        pe, simd, G = self.pe, self.simd, self.groups
        wb = self.w_width
        depth = G * self.steps

        m.submodules.window = win = WindowGenerator(c, h, w, self.weight.shape[2:], self.padding,
                                                    self.in_elem, simd, G, stride=self.stride)
        wiring.connect(m, wiring.flipped(self.i), win.i)

        ce = Signal()  # clock enable of the window, weight source and PEs
        m.d.comb += win.en.eq(ce)
        # The weights of a beat, one enabled cycle after its address (in step with the taps).
        wdata = Signal(pe * simd * wb)
        if self.weights == "rom":
            # Yosys keeps small ROMs in logic by its own cost model; a larger weight ROM belongs
            # in block RAM (iCE40: 4 kbit blocks), which the attribute asks for.
            attrs = {"rom_style": "block"} if pe * simd * wb * depth >= ROM_BLOCK_BITS else {}
            m.submodules.rom = rom = Memory(shape=unsigned(pe * simd * wb), depth=depth,
                                            init=self.weight_rom(), attrs=attrs)
            rp = rom.read_port()
            m.d.comb += [rp.addr.eq(win.w_addr), rp.en.eq(ce), wdata.eq(rp.data)]
        else:
            self._const_weights(m, win.w_addr, ce, wdata)

        # PEs and requantizers; the requantizers take ``slots`` cycles per value, all in step.
        # ``ce_out`` stops everything while a finished pixel waits; ``ce`` also stops the window
        # and the PEs while a sum waits for the requantizers (only when a pass is shorter than
        # ``slots`` beats).
        ce_out = Signal()
        ys, rqs = [], []
        for p in range(pe):
            u = PE(self.lane, simd, self.acc_range)
            m.submodules[f"pe{p}"] = u
            m.d.comb += [
                u.en.eq(ce), u.valid.eq(win.valid), u.first.eq(win.first), u.last.eq(win.last),
                u.x.eq(win.taps), u.w.eq(wdata[p * simd * wb:(p + 1) * simd * wb]),
            ]
            r = Requant(self.requant, [g * pe + p for g in range(G)], self.rq_range, negate=self.op == "l1",
                        slots=self.rq_slots)
            m.submodules[f"rq{p}"] = r
            # The sum is proven to lie in rq_range: narrowing it to the requantizer's input
            # keeps the value.
            m.d.comb += [r.en.eq(ce_out), r.valid.eq(u.acc_valid), r.x.eq(u.acc)]
            ys.append(r.y)
            rqs.append(r)
        acc_valid = m.submodules["pe0"].acc_valid
        m.d.comb += ce.eq(ce_out & ~(acc_valid & ~rqs[0].ready))
        # The group of the next sum: passes arrive in group order.
        g_in = Signal(range(G))
        if G > 1:
            with m.If(ce_out & acc_valid & rqs[0].ready):
                m.d.sync += g_in.eq(Mux(g_in == G - 1, 0, g_in + 1))
        for r in rqs:
            m.d.comb += r.sel.eq(g_in)
        y_valid, g_out = rqs[0].y_valid, rqs[0].y_sel

        # The results go straight into the output register, group by group; a group that
        # arrives while the previous pixel still waits there stalls the engine.
        layout = data.ArrayLayout(self.out_elem, o)
        obuf = Signal(layout)
        ovalid = Signal()
        last_group = g_out == G - 1
        m.d.comb += [self.o.valid.eq(ovalid), self.o.payload.eq(obuf),
                     ce_out.eq(~(y_valid & ovalid & ~self.o.ready))]
        with m.If(self.o.ready):
            m.d.sync += ovalid.eq(0)
        with m.If(ce_out & y_valid):
            with m.If(last_group):
                m.d.sync += ovalid.eq(1)
            with m.Switch(g_out):
                for g in range(G):
                    with m.Case(g):
                        m.d.sync += [obuf[g * pe + p].eq(ys[p]) for p in range(pe)]
        return m

    def _const_weights(self, m, addr, ce, wdata):
        """``weights="const"``: ``wdata`` from constants, one enabled cycle after ``addr`` like
        a ROM read.  A lane with one weight for every address is a plain constant (no register,
        no mux); the others share a ``Switch`` on the registered address, each case listing
        the addresses with the same word."""
        words = self.lane_words()
        depth, wb = words.shape[0], self.w_width
        addr_q = Signal(range(depth))
        if depth > 1:
            with m.If(ce):
                m.d.sync += addr_q.eq(addr)
        for p in range(self.pe):
            for lane in range(self.simd):
                field = wdata[(p * self.simd + lane) * wb:(p * self.simd + lane + 1) * wb]
                values = [int(v) for v in words[:, p, lane]]
                if len(set(values)) == 1:
                    m.d.comb += field.eq(values[0])
                    continue
                by_value: dict[int, list[int]] = {}
                for a, v in enumerate(values):
                    by_value.setdefault(v, []).append(a)
                with m.Switch(addr_q):
                    for v, addrs in by_value.items():
                        with m.Case(*addrs):
                            m.d.comb += field.eq(v)
