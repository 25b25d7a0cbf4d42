"""The requantization stage of the Winograd tile engine: a 2×2 output tile of ``pe`` channels in,
its four values requantized one after the other, a step of ``pe`` results per value out."""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .. import ir
from . import constructing, elem_shape
from .conv import requant_slots
from .requant import Requant, requant_shape
from .winograd_lanes import tile_signature

__all__ = ["TileRequant"]


class TileRequant(wiring.Component):
    """Hold a finished tile and requantize it: ``pe`` sequential
    :class:`~hwgen.hw.requant.Requant` units (with ``negate``: the tiles are the magnitudes of
    the l1 sums), unit ``p`` serving the channels ``g·pe + p`` of the ``groups`` groups.

    A tile (:class:`~hwgen.hw.winograd_lanes.TileLanes`: four values ``k = 2a + b`` per unit)
    is copied into hold registers when it is done and the registers are free; the units take
    its values ``k = 0..3`` one per ``slots`` cycles.  While a done tile cannot be copied (the
    registers still hold the previous one), :attr:`tile_en` is low: the tile side waits.

    Parameters
    ----------
    requant : :class:`hwgen.ir.Requant`
        ``O = groups · pe`` channels.
    pe : int (keyword-only)
        Units, dividing ``O``.
    in_range : (int, int) (keyword-only)
        Exact interval of a complete tile value (magnitude).
    tile_shape : ShapeLike (keyword-only)
        The shape of a value on ``y`` (the accumulators'; the complete values lie in
        ``in_range``).
    slots : int, optional (keyword-only)
        Cycles per value (:class:`~hwgen.hw.requant.Requant`); default the most digits of a
        multiplier.

    Members
    -------
    tiles : ``In(tile_signature(tile_shape, pe=pe, groups=groups))``
        The tile side's results (:class:`~hwgen.hw.winograd_lanes.TileLanes`): taken in a
        cycle with ``done`` and :attr:`tile_en` high.
    tile_en : ``Out(1)``
        Clock enable of the tile side: low while the outputs are stalled or a done tile waits
        for the hold registers (combinational from ``done``, the state and ``step_ready``).
    step : ``Out(unsigned(pe · out_bits))``, step_valid : ``Out(1)``,
    step_group : ``Out(range(groups))``, step_ready : ``In(1)``
        The ``pe`` results of one value (unit ``p`` at bits ``p · out_bits``), value by value;
        a step is taken in a cycle with ``step_ready``, and nothing moves while it waits.

    Timing
    ------
    A tile per ``4 · slots`` cycles; a value's step ``slots`` cycles after it enters the units
    (:attr:`latency`).
    """

    def __init__(self, requant: ir.Requant, *, pe: int, in_range: tuple[int, int], tile_shape,
                 slots: int | None = None):
        with constructing(self):
            if not isinstance(requant, ir.Requant):
                raise TypeError(f"requant must be an hwgen.ir.Requant, not "
                                f"{type(requant).__name__}")
            o = len(requant.mult)
            if not isinstance(pe, int) or isinstance(pe, bool) or pe < 1 or o % pe:
                raise ValueError(f"pe must divide the {o} channels, not {pe!r}")
            lo, hi = (int(v) for v in in_range)
            if lo > hi:
                raise ValueError(f"in_range must not be empty, not {tuple(in_range)!r}")
            self._requant, self._pe, self._groups = requant, pe, o // pe
            need = requant_slots(requant)
            if slots is None:
                slots = need
            elif not isinstance(slots, int) or isinstance(slots, bool) or slots < need:
                raise ValueError(f"slots must be an integer of at least {need}, the most digits "
                                 f"of a multiplier, not {slots!r}")
            self._in_range, self._slots = (lo, hi), slots
            self._out_shape = requant_shape(requant)
        groups = self._groups
        super().__init__({
            "tiles": In(tile_signature(tile_shape, pe=pe, groups=groups)),
            "tile_en": Out(1),
            "step": Out(pe * self._out_shape.width), "step_valid": Out(1),
            "step_group": Out(range(groups)), "step_ready": In(1),
        })

    @property
    def requant(self) -> ir.Requant:
        return self._requant

    @property
    def slots(self) -> int:
        """Cycles per value."""
        return self._slots

    @property
    def latency(self) -> int:
        """Cycles from a value entering the units to its step."""
        return self._slots

    def elaborate(self, platform):
        m = Module()
        pe, groups = self._pe, self._groups
        units = []
        for p in range(pe):
            unit = Requant(self._requant, [g * pe + p for g in range(groups)], self._in_range,
                           negate=True, slots=self._slots)
            m.submodules[f"rq{p}"] = unit
            units.append(unit)
        # The units move unless their result waits for the consumer.
        out_en = Signal()
        m.d.comb += out_en.eq(~units[0].y_valid | self.step_ready)

        # ---- hold registers: the tile being requantized, and its value in the units
        busy, value = Signal(), Signal(2)
        tiles = self.tiles
        held_group = Signal.like(tiles.group)
        take_value, free = Signal(), Signal()
        held = []
        for p in range(pe):
            regs = [Signal(elem_shape(*self._in_range), name=f"yh{p}_{k}") for k in range(4)]
            with m.If(self.tile_en & tiles.done):
                # The complete values lie in in_range, inside the accumulators' shape.
                m.d.sync += [r.eq(tiles.y[p][k]) for k, r in enumerate(regs)]
            held.append(regs)
        m.d.comb += [take_value.eq(out_en & busy & units[0].ready),
                     free.eq(~busy | (take_value & (value == 3))),
                     self.tile_en.eq(out_en & ~(tiles.done & ~free))]
        with m.If(take_value):
            m.d.sync += value.eq(value + 1)
            with m.If(value == 3):
                m.d.sync += busy.eq(0)
        with m.If(self.tile_en & tiles.done):
            m.d.sync += [busy.eq(1), value.eq(0), held_group.eq(tiles.group)]

        # ---- the units: value `value` of the held tile
        for p, unit in enumerate(units):
            x = Signal(elem_shape(*self._in_range), name=f"rqx{p}")
            with m.Switch(value):
                for k in range(4):
                    with m.Case(k):
                        m.d.comb += x.eq(held[p][k])
            m.d.comb += [unit.en.eq(out_en), unit.valid.eq(busy), unit.x.eq(x),
                         unit.sel.eq(held_group)]
        m.d.comb += [self.step.eq(Cat(*(unit.y for unit in units))),
                     self.step_valid.eq(units[0].y_valid), self.step_group.eq(units[0].y_sel)]
        return m
