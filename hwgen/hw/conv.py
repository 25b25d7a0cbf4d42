"""The streaming AdderNet (l1) convolution engine: line buffers, PE array, requantization."""

from __future__ import annotations

import numpy as np
from amaranth import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import ir
from .pe import L1PE, lane_max
from .requant import Requant, requant_shape
from .window import WindowGenerator, tap_order, valid_simd

__all__ = ["ConvEngine", "default_folding", "balanced_foldings", "estimate_luts", "as_conv"]

#: Most line-buffer read ports a default folding uses (each is a block-RAM copy on iCE40).
MAX_PORTS = 3
#: Weight ROMs of at least this many bits are put in block RAM.
ROM_BLOCK_BITS = 1024
#: Default LUT budget of one engine (iCE40 UP5K: 5280 LUTs for the whole accelerator).
LUT_BUDGET = 1200


def _shape(lo: int, hi: int) -> Shape:
    width, is_signed = ir.bits_for(lo, hi)
    return Shape(width, is_signed)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def as_conv(layer, in_shape) -> tuple[np.ndarray, int]:
    """``(weight (O, C, KH, KW), padding)`` of an adder conv, or of an adder dense layer over
    a ``C×H×W`` map (PyTorch's flatten order ``(c, h, w)`` makes it an ``H×W`` convolution
    without padding and a ``1×1`` output)."""
    if isinstance(layer, ir.AdderConv2d):
        if layer.stride != 1:
            raise ValueError(f"{layer.name}: the conv engine supports stride 1 only, got stride "
                             f"{layer.stride}; use stride 1 and a max-pool layer to downsample")
        layer.out_shape(tuple(in_shape))  # validates channels and sizes
        return layer.weight, int(layer.padding)
    if isinstance(layer, ir.AdderDense):
        if len(in_shape) != 3:
            raise ValueError(f"{layer.name}: the conv engine runs a dense layer over a C×H×W map, "
                             f"got input shape {tuple(in_shape)}")
        c, h, w = in_shape
        o, k = layer.weight.shape
        if k != c * h * w:
            raise ValueError(f"{layer.name}: weight takes {k} inputs, the {c}×{h}×{w} map has {c * h * w}")
        return layer.weight.reshape(o, c, h, w), 0
    raise TypeError(f"ConvEngine computes adder_conv2d and adder_dense layers, not "
                    f"{getattr(layer, 'kind', type(layer).__name__)!r}")


def _widths(weight, padding, in_range):
    lo, hi = (int(v) for v in in_range)
    x_range = (min(lo, 0), max(hi, 0)) if padding else (lo, hi)
    w_range = (int(weight.min()), int(weight.max()))
    acc_max = -ir._l1_range(weight.reshape(weight.shape[0], -1), *x_range)[0]
    return x_range, w_range, acc_max


def requant_slots(requant) -> int:
    """Cycles the requantizer spends on one value: the most digits of a multiplier."""
    if requant is None:
        return 3
    return max(1, max(len(ir.csd(int(v))) for v in requant.mult))


def requant_bits(requant) -> int:
    return requant.out_bits if requant is not None else 8


def estimate_luts(layer, in_shape, in_range, requant: ir.Requant | None, pe: int, simd: int) -> int:
    """Rough iCE40 LUT4 count of an engine (for choosing the folding, not a report)."""
    weight, padding = as_conv(layer, in_shape)
    o, c, kh, kw = weight.shape
    x_range, w_range, acc_max = _widths(weight, padding, in_range)
    xb = ir.bits_for(*x_range)[0]
    db = ir.bits_for(x_range[0] - w_range[1], x_range[1] - w_range[0])[0]
    ab = ir.bits_for(0, lane_max(x_range, w_range))[0]
    accb = ir.bits_for(0, acc_max)[0]
    groups = o // pe
    lane = db + ab
    tree = (simd - 1) * (ab + max(1, (simd - 1).bit_length()) // 2 + 1)
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
    return int(pe * (simd * lane + tree + accb + rq) + window)


def _candidates(layer, in_shape, in_range, requant):
    weight, _ = as_conv(layer, in_shape)
    o, c, kh, kw = weight.shape
    k = c * kh * kw
    oh, ow = layer.out_shape(in_shape)[1:] if isinstance(layer, ir.AdderConv2d) else (1, 1)
    out = []
    for pe in _divisors(o):
        for simd in valid_simd(c, kh * kw):
            if max(1, simd // c) > MAX_PORTS:
                continue
            cycles = oh * ow * (o // pe) * max(k // simd, requant_slots(requant))
            out.append((cycles, estimate_luts(layer, in_shape, in_range, requant, pe, simd), pe, simd))
    return out


def default_folding(layer, in_shape, in_range=(0, 255), requant: ir.Requant | None = None,
                    lut_budget: int = LUT_BUDGET, target_cycles: int | None = None) -> tuple[int, int]:
    """``(pe, simd)`` of an engine, from :func:`estimate_luts`.

    Without ``target_cycles``: the fastest folding (fewest cycles per image) that fits
    ``lut_budget``, the cheapest among equals. With ``target_cycles`` (the pipeline's
    bottleneck, see :func:`balanced_foldings`): the cheapest folding that reaches it within
    the budget, else the fastest that fits. If nothing fits, the cheapest of all.
    Candidates: ``pe`` divides the output channels, ``simd`` is one of
    :func:`hwgen.hw.window.valid_simd` with at most :data:`MAX_PORTS` read ports.
    """
    cands = _candidates(layer, in_shape, in_range, requant)
    fit = [cand for cand in cands if cand[1] <= lut_budget]
    if not fit:
        best = min(cands, key=lambda t: (t[1], t[0]))
    elif target_cycles is not None and any(cand[0] <= target_cycles for cand in fit):
        best = min((cand for cand in fit if cand[0] <= target_cycles), key=lambda t: (t[1], t[0]))
    else:
        best = min(fit, key=lambda t: (t[0], t[1]))
    return best[2], best[3]


def balanced_foldings(specs, lut_budget: int = LUT_BUDGET) -> list[tuple[int, int]]:
    """Foldings for a pipeline of engines, ``specs`` a list of
    ``(layer, in_shape, in_range, requant)``: the slowest engine at its fastest within
    ``lut_budget`` sets the throughput, and every other engine takes the cheapest folding that
    keeps up with it (a faster engine than the bottleneck only costs LUTs)."""
    fastest = [default_folding(*spec, lut_budget=lut_budget) for spec in specs]
    target = 0
    for spec, (pe, simd) in zip(specs, fastest):
        target = max(target, next(c[0] for c in _candidates(*spec) if c[2:] == (pe, simd)))
    return [default_folding(*spec, lut_budget=lut_budget, target_cycles=target) for spec in specs]


class ConvEngine(wiring.Component):
    """AdderNet (l1) convolution + fused per-channel requantization, streaming.

    ``y[o, oy, ox] = requant_o(-Σ_{c,ky,kx} |x[c, oy+ky-pad, ox+kx-pad] - w[o, c, ky, kx]|)``,
    stride 1, zero padding (a padded 0 still adds ``|0 - w|``, as :mod:`hwgen.golden`).
    An :class:`hwgen.ir.AdderDense` layer over a ``C×H×W`` map runs as an ``H×W`` convolution
    without padding (:func:`as_conv`), giving one ``O``-channel pixel per image.

    Structure: a :class:`~hwgen.hw.window.WindowGenerator` (line buffers) issues ``simd`` taps
    per cycle; ``pe`` :class:`~hwgen.hw.pe.L1PE` compute ``pe`` output channels in parallel
    with their weights from a ROM (one word of ``pe*simd`` weights per beat, read in step
    with the window); one :class:`~hwgen.hw.requant.Requant` per PE; the ``O`` results of a
    pixel are gathered and leave as one beat.

    Parameters
    ----------
    layer : :class:`hwgen.ir.AdderConv2d` or :class:`hwgen.ir.AdderDense`
    requant : :class:`hwgen.ir.Requant`  with ``O`` channels.
    in_shape : (C, H, W)
    in_range : (int, int)
        Exact interval of the input values (``model.in_ranges()``); sets the input shape.
    pe, simd : int, optional
        Output channels in parallel (divides ``O``) and taps per PE per cycle (one of
        :func:`~hwgen.hw.window.valid_simd`); default :func:`default_folding`.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(bits_for(*in_range), C)))``
    o : ``Out(stream.Signature(ArrayLayout(requant_shape(requant), O)))``
        Pixels in raster order, images back to back.

    Timing
    ------
    ``cycles_per_image = OH*OW * (O/pe) * max(C*KH*KW/simd, slots)`` when neither stream
    stalls, ``slots`` (:func:`requant_slots`, at most ``max_terms``) the cycles the sequential
    requantizer spends on one value: it works while the next value accumulates, and stalls the
    PEs only when a pass is shorter.  ``latency`` (from the beat issuing an output's last taps
    to its ``o.valid``): ``1 + L1PE.latency + slots + 1`` cycles.  The output register is also
    the gather of a pixel's groups: a group finished while the previous pixel still waits in it
    stalls the engine.  The input is accepted at up to one pixel per cycle while the line
    buffer has a free row.
    """

    def __init__(self, layer, requant: ir.Requant, in_shape: tuple[int, int, int], in_range: tuple[int, int],
                 *, pe: int | None = None, simd: int | None = None):
        if not isinstance(requant, ir.Requant):
            raise TypeError(f"requant must be an hwgen.ir.Requant, not {type(requant).__name__}")
        if len(in_shape) != 3:
            raise ValueError(f"in_shape must be (C, H, W), got {tuple(in_shape)}")
        in_shape = tuple(int(v) for v in in_shape)
        weight, padding = as_conv(layer, in_shape)
        o, c, kh, kw = weight.shape
        if len(requant.mult) != o:
            raise ValueError(f"{requant.name}: {len(requant.mult)} channels, {layer.name} has {o} outputs")
        lo, hi = (int(v) for v in in_range)
        if lo > hi:
            raise ValueError(f"empty in_range {in_range}")
        if pe is None or simd is None:
            d_pe, d_simd = default_folding(layer, in_shape, (lo, hi), requant)
            pe = d_pe if pe is None else pe
            simd = d_simd if simd is None else simd
        if not isinstance(pe, int) or pe < 1 or o % pe:
            raise ValueError(f"{layer.name}: pe={pe!r} must divide the {o} output channels "
                             f"(one of {_divisors(o)})")
        if simd not in valid_simd(c, kh * kw):
            raise ValueError(f"{layer.name}: simd={simd!r} does not fold a {c}-channel {kh}×{kw} "
                             f"window; pick one of {valid_simd(c, kh * kw)}")
        self.layer, self.requant = layer, requant
        self.in_shape, self.in_range = in_shape, (lo, hi)
        self.weight, self.padding = weight, padding
        self.pe, self.simd = pe, simd
        self.groups = o // pe
        self.steps = c * kh * kw // simd
        _, h, w = in_shape
        self.out_hw = (h + 2 * padding - kh + 1, w + 2 * padding - kw + 1)
        self.x_range, self.w_range, self.acc_max = _widths(weight, padding, (lo, hi))
        self.in_elem = _shape(lo, hi)
        self.w_shape = _shape(*self.w_range)
        self.out_elem = requant_shape(requant)
        self.pe_latency = 2 + max(0, (simd - 1).bit_length())
        self.rq_slots = requant_slots(requant)
        self.latency = 1 + self.pe_latency + self.rq_slots + 1
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(self.in_elem, c))),
            "o": Out(stream.Signature(data.ArrayLayout(self.out_elem, o))),
        })

    @property
    def cycles_per_image(self) -> int:
        return self.out_hw[0] * self.out_hw[1] * self.groups * max(self.steps, self.rq_slots)

    @property
    def params(self) -> dict:
        return {
            "pe": self.pe, "simd": self.simd, "groups": self.groups, "steps": self.steps,
            "in_bits": self.in_elem.width, "weight_bits": self.w_shape.width,
            "acc_bits": ir.bits_for(0, self.acc_max)[0], "out_bits": self.out_elem.width,
            "latency": self.latency, "cycles_per_image": self.cycles_per_image,
        }

    def weight_rom(self) -> list[int]:
        """ROM words: word ``g*steps + s`` holds, for PE ``p`` and lane ``l``, the weight of
        output ``g*pe + p`` at tap ``s*simd + l`` of :func:`~hwgen.hw.window.tap_order`."""
        o, c, kh, kw = self.weight.shape
        wb = self.w_shape.width
        mask = (1 << wb) - 1
        taps = tap_order(c, kh, kw)
        words = []
        for g in range(self.groups):
            for s in range(self.steps):
                word, pos = 0, 0
                for p in range(self.pe):
                    for lane in range(self.simd):
                        ky, kx, ch = taps[s * self.simd + lane]
                        word |= (int(self.weight[g * self.pe + p, ch, ky, kx]) & mask) << pos
                        pos += wb
                words.append(word)
        return words

    def elaborate(self, platform):
        m = Module()
        c, h, w = self.in_shape
        o = self.weight.shape[0]
        pe, simd, G = self.pe, self.simd, self.groups
        wb = self.w_shape.width

        m.submodules.window = win = WindowGenerator(c, h, w, self.weight.shape[2:], self.padding,
                                                    self.in_elem, simd, G)
        wiring.connect(m, wiring.flipped(self.i), win.i)

        # Yosys keeps small ROMs in logic by its own cost model; a larger weight ROM belongs in
        # block RAM (iCE40: 4 kbit blocks), which the attribute asks for.
        bits = pe * simd * wb * G * self.steps
        attrs = {"rom_style": "block"} if bits >= ROM_BLOCK_BITS else {}
        m.submodules.rom = rom = Memory(shape=unsigned(pe * simd * wb), depth=G * self.steps,
                                        init=self.weight_rom(), attrs=attrs)
        rp = rom.read_port()

        ce = Signal()  # clock enable of the window, weight ROM and PEs
        m.d.comb += [win.en.eq(ce), rp.addr.eq(win.w_addr), rp.en.eq(ce)]

        # PEs and requantizers; the requantizers take ``slots`` cycles per value, all in step.
        # ``ce_out`` stops everything while a finished pixel waits; ``ce`` also stops the window
        # and the PEs while a magnitude waits for the requantizers (only when a pass is
        # shorter than ``slots`` beats).
        ce_out = Signal()
        ys, rqs = [], []
        for p in range(pe):
            u = L1PE(simd, self.x_range, self.w_range, self.acc_max)
            m.submodules[f"pe{p}"] = u
            m.d.comb += [
                u.en.eq(ce), u.valid.eq(win.valid), u.first.eq(win.first), u.last.eq(win.last),
                u.x.eq(win.taps), u.w.eq(rp.data[p * simd * wb:(p + 1) * simd * wb]),
            ]
            r = Requant(self.requant, [g * pe + p for g in range(G)], (0, self.acc_max), negate=True,
                        slots=self.rq_slots)
            m.submodules[f"rq{p}"] = r
            m.d.comb += [r.en.eq(ce_out), r.valid.eq(u.mag_valid), r.x.eq(u.mag)]
            ys.append(r.y)
            rqs.append(r)
        mag_valid = m.submodules["pe0"].mag_valid
        m.d.comb += ce.eq(ce_out & ~(mag_valid & ~rqs[0].ready))
        # The group of the next magnitude: passes arrive in group order.
        g_in = Signal(range(G))
        if G > 1:
            with m.If(ce_out & mag_valid & rqs[0].ready):
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
