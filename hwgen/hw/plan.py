"""Folding of a pipeline of engines: every engine's candidates, one pace for all.

Here, not in an engine module, because the pace is chosen over engines of every kind: the
direct engine (:mod:`hwgen.hw.conv`) and the tile engine (:mod:`hwgen.hw.winograd`) each list
their own candidates and neither imports the other."""

from __future__ import annotations

from .conv import LUT_BUDGET, choose_folding, conv_candidates
from .winograd import KIND as WINOGRAD_KIND, winograd_candidates

__all__ = ["candidates", "balanced_foldings"]


def candidates(layer, in_shape, in_range, requant,
               weights="rom") -> list[tuple[int, int, int, int]]:
    """``(cycles per image, estimated LUTs, a, b)`` of every folding of ``layer``'s engine:
    ``(pe, simd)`` for a direct engine, ``(pe, overlap)`` for the tile engine (which folds its
    output channels only and has no ``weights`` mode)."""
    if getattr(layer, "kind", None) == WINOGRAD_KIND:
        return winograd_candidates(layer, in_shape, in_range, requant)
    return conv_candidates(layer, in_shape, in_range, requant, weights)


def balanced_foldings(specs, lut_budget: int = LUT_BUDGET,
                      target_cycles: int | None = None) -> list[tuple[int, int]]:
    """Foldings for a pipeline of engines, ``specs`` a list of
    ``(layer, in_shape, in_range, requant)`` or ``(..., requant, weights)``: the slowest engine
    at its fastest within ``lut_budget`` sets the throughput, and every other engine takes the
    cheapest folding that keeps up with it (a faster engine than the bottleneck only costs LUTs).

    ``target_cycles`` sets the pace instead (cycles per image): every engine takes the cheapest
    folding that reaches it within the budget, else the fastest that fits.  Two designs built
    with the same target have the same throughput where their budgets allow: the fair way to
    set different arithmetic side by side (``hwgen compare``)."""
    specs = [tuple(spec) + ("rom",) * (5 - len(spec)) for spec in specs]
    cands = [candidates(*spec) for spec in specs]
    target = 0 if target_cycles is None else int(target_cycles)
    for cand in cands if target_cycles is None else []:
        fold = choose_folding(cand, lut_budget)
        target = max(target, next(c[0] for c in cand if c[2:] == fold))
    return [choose_folding(cand, lut_budget, target) for cand in cands]
