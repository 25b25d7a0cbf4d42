"""The planner: an integer model becomes the list of engine specs of its pipeline, every
folding chosen once, pools included.

:func:`plan` reads the layer sequence (which layers each engine computes), lists every direct
and tile engine's candidate foldings (cycles per image, estimated LUTs), chooses them
together (:func:`balanced_foldings`), applies the user's overrides (validated once, by
:mod:`hwgen.hw.spec`), then gives each max pool the fewest lanes that slow down no engine.
The engines are built from the specs (:class:`hwgen.hw.top.Accelerator`) and never plan again.

Here, not in an engine module, because the pace is chosen over engines of every family: the
direct engine (:mod:`hwgen.hw.conv`) and the tile engine (:mod:`hwgen.hw.winograd`) each list
their own candidates and neither imports the other."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from .. import ir
from .conv import LUT_BUDGET, choose_folding, conv_candidates, conv_cycles
from .pool import POOL_ENGINES
from .spec import (DirectFolding, DirectSpec, EngineSpec, FoldingError, GlobalPoolSpec, HeadSpec,
                   LaneOp, PoolFolding, PoolSpec, WindowPoolSpec, WinogradFolding, WinogradSpec,
                   parse_overrides)
from .winograd import winograd_candidates, winograd_cycles

__all__ = ["Plan", "plan", "candidates", "balanced_foldings", "cycles", "beat_period",
           "SUPPORTED", "engine_errors"]

#: The layers of a direct engine, by IR class: its lanes' arithmetic.
CONV_OPS = {ir.AdderConv2d: LaneOp.L1, ir.ShiftConv2d: LaneOp.SHIFT, ir.Conv2d: LaneOp.MAC}
DENSE_OPS = {ir.AdderDense: LaneOp.L1, ir.ShiftDense: LaneOp.SHIFT, ir.Dense: LaneOp.MAC}

SUPPORTED = ("{adder_conv2d|shift_conv2d|conv2d|winograd_adder_conv2d}+requant, "
             "{maxpool2d|sumpool2d|global_sumpool2d}, then "
             "flatten and one or more {adder_dense|shift_dense|dense}+requant (the last one ends "
             "the model)")


@contextmanager
def engine_errors(name: str):
    """An engine's ``TypeError`` / ``ValueError`` about its layer becomes a one-line
    :class:`hwgen.ir.ModelError` naming the layer."""
    try:
        yield
    except (TypeError, ValueError) as e:
        if isinstance(e, ir.ModelError):
            raise
        text = str(e)
        raise ir.ModelError(text if text.startswith(f"{name}:") else f"layer {name!r}: {text}") from None


# --------------------------------------------------------------------------- figures of a spec

def candidates(spec: EngineSpec, weights: str = "rom") -> list[tuple[int, int, int, int]]:
    """``(cycles per image, estimated LUTs, a, b)`` of every folding of ``spec``'s engine:
    ``(pe, simd)`` for a direct engine (estimated with ``weights``), ``(pe, overlap)`` for the
    tile engine."""
    if isinstance(spec, WinogradSpec):
        return winograd_candidates(spec.layer, spec.in_shape, spec.in_range, spec.requant)
    return conv_candidates(spec.layer, spec.in_shape, spec.in_range, spec.requant, weights)


def cycles(spec: EngineSpec) -> int:
    """Cycles per image of ``spec``'s engine with its folding (when neither stream stalls)."""
    f = spec.folding
    if isinstance(spec, WinogradSpec):
        return winograd_cycles(spec.layer, spec.in_shape, spec.requant, f.pe, bool(f.overlap))
    if isinstance(spec, DirectSpec):
        return conv_cycles(spec.layer, spec.in_shape, spec.requant, f.pe, f.simd)
    return POOL_ENGINES[type(spec)].spec_cycles(spec, f.lanes)


def beat_period(spec: EngineSpec) -> int:
    """Cycles ``spec``'s engine can leave an output pixel waiting for ``ready`` without losing
    pace, for the lanes of the pool it feeds.

    A direct engine's output register also gathers a pixel's ``groups``: the next group's
    result, ``cycles_per_image / (pixels * groups)`` cycles after the last, stalls the engine if
    the pixel is still there. A Winograd engine sends pixels from a double-buffered tile-row
    memory, gathering each pixel's groups in ``groups + 1`` cycles after the previous leaves:
    it keeps up while a pixel takes no more than ``cycles_per_image / pixels`` cycles in all.
    A max pool delivers a pooled pixel every ``size`` pixels of a row; a window pool (and the
    global sum) a pixel every ``cycles_per_image / pixels`` cycles."""
    n = cycles(spec)
    pixels = int(np.prod(spec.out_shape[1:])) if len(spec.out_shape) == 3 else 1
    if isinstance(spec, (WindowPoolSpec, GlobalPoolSpec)):
        return max(1, n // pixels)
    if isinstance(spec, PoolSpec):
        return max(1, spec.size * n // (spec.in_shape[1] * spec.in_shape[2]))
    groups = spec.out_shape[0] // spec.folding.pe
    if isinstance(spec, WinogradSpec):
        return max(1, n // pixels - (groups + 1))
    return max(1, n // (pixels * groups))


def balanced_foldings(cands: list[list[tuple]], lut_budget: int = LUT_BUDGET,
                      target_cycles: int | None = None) -> list[tuple[int, int]]:
    """One folding of each engine of a pipeline, ``cands`` their :func:`candidates`: the
    slowest engine at its fastest within ``lut_budget`` sets the throughput, and every other
    engine takes the cheapest folding that keeps up with it (a faster engine than the
    bottleneck only costs LUTs).

    ``target_cycles`` sets the pace instead (cycles per image): every engine takes the cheapest
    folding that reaches it within the budget, else the fastest that fits.  Two designs built
    with the same target have the same throughput where their budgets allow: the fair way to
    set different arithmetic side by side (``hwgen compare``)."""
    target = 0 if target_cycles is None else int(target_cycles)
    for cand in cands if target_cycles is None else []:
        fold = choose_folding(cand, lut_budget)
        target = max(target, next(c[0] for c in cand if c[2:] == fold))
    return [choose_folding(cand, lut_budget, target) for cand in cands]


# --------------------------------------------------------------------------- the plan

@dataclass(frozen=True, eq=False)
class Plan:
    """The engines of a model's pipeline, in stream order, and how their foldings came about:
    ``auto`` the planner's own choice of every engine, ``overrides`` the user's (validated),
    ``target_cycles`` the pace asked for (``None``: the fastest that fits)."""

    specs: tuple[EngineSpec, ...]
    auto: dict
    overrides: dict
    target_cycles: int | None

    @property
    def foldings(self) -> dict:
        """``{engine: folding}`` of every folded engine, as built."""
        return {s.name: s.folding for s in self.specs if s.folding is not None}


def plan(model: ir.Model, overrides: dict | None = None, *, target_cycles: int | None = None,
         lut_budget: int = LUT_BUDGET, argmax: bool = True) -> Plan:
    """The :class:`Plan` of ``model``: its engine specs with every folding chosen; ``argmax``
    False ends it with a head that streams the scores out alone (see :class:`HeadSpec`).

    ``overrides`` ``{layer: {key: value}}`` (:func:`hwgen.hw.spec.parse_overrides`) win over
    the planner's choice, key by key.  Raises :class:`hwgen.ir.ModelError` for a layer sequence
    without engines, an override naming no engine or with keys of another engine's folding."""
    if target_cycles is not None and (not isinstance(target_cycles, int) or isinstance(target_cycles, bool)
                                      or target_cycles < 1):
        raise ir.ModelError(f"target cycles per image must be a positive integer, not {target_cycles!r}")
    overrides = parse_overrides(overrides or {})
    specs = _pipeline(model, argmax)
    head = specs.pop()
    names = [s.name for s in specs]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ir.ModelError(f"folding names {', '.join(map(repr, unknown))}, not a conv, dense or "
                            f"max-pool layer of the model (those are: {', '.join(sorted(names)) or 'none'})")
    for s in specs:
        if s.name in overrides:  # keys of another engine's folding, before any estimate
            _folding_type(s)(**{k: 1 for k in _folding_type(s).keys()}).override(
                overrides[s.name], f"folding of {s.name!r}")
    auto = {}
    engines = [s for s in specs if not isinstance(s, PoolSpec)]
    weights = [overrides.get(s.name, {}).get("weights", "rom") for s in engines]
    cands = []
    for s, w in zip(engines, weights):
        with engine_errors(s.name):
            cands.append(candidates(s, w))
    for s, w, (a, b) in zip(engines, weights, balanced_foldings(cands, lut_budget, target_cycles)):
        auto[s.name] = (WinogradFolding(a, int(b)) if isinstance(s, WinogradSpec)
                        else DirectFolding(a, b, w))
    chosen = {}
    for s in engines:
        fold = auto[s.name].override(overrides.get(s.name, {}), f"folding of {s.name!r}")
        chosen[s.name] = replace(s, folding=fold)
    return Plan((*_plan_pools(specs, chosen, auto, overrides), head), auto, overrides, target_cycles)


def _folding_type(spec):
    return (WinogradFolding if isinstance(spec, WinogradSpec) else
            PoolFolding if isinstance(spec, PoolSpec) else DirectFolding)


def _plan_pools(specs, chosen, auto, overrides):
    """``specs`` with the chosen foldings, each max pool given the fewest ``lanes`` (channels
    per cycle, a divisor of ``C``) such that (1) its cycles per image do not exceed the pace of
    the conv / dense engines (the slowest of them), and (2) it takes a pixel in no more cycles
    than its producer can wait for (:func:`beat_period`): a slower pool would stall the
    producer, however idle on average.  Records the choice in ``auto``."""
    pace = max((cycles(s) for s in chosen.values()), default=None)
    out = []
    for s in specs:
        if not isinstance(s, PoolSpec):
            out.append(chosen[s.name])
            continue
        c = s.in_shape[0]
        engine = POOL_ENGINES[type(s)]
        options = engine.lane_options(s)
        if pace is None or (type(s) is PoolSpec and s.size == 1):
            lanes = c if c in options else options[-1]  # the identity: a pixel per cycle anyway
        else:
            period = beat_period(out[-1]) if out else None
            lanes = next((d for d in options
                          if engine.spec_cycles(s, d) <= pace
                          and (period is None or c // d <= period)), options[-1])
        auto[s.name] = PoolFolding(lanes)
        fold = auto[s.name].override(overrides.get(s.name, {}), f"folding of {s.name!r}")
        if fold.lanes not in options:
            raise FoldingError(f"folding of {s.name!r}: lanes={fold.lanes!r} must divide its {c} "
                               f"channels{'' if type(s) is PoolSpec else ' (window taps)'}; "
                               f"pick one of {options}")
        out.append(replace(s, folding=fold))
    return out


# --------------------------------------------------------------------------- the layer sequence

def _pipeline(model: ir.Model, argmax: bool = True) -> list[EngineSpec]:
    """The engines of ``model``'s layer sequence, in order, without foldings; the last is the
    head."""
    layers = model.layers
    in_shapes, in_ranges = model.in_shapes(), model.in_ranges()
    out_shapes, out_ranges = model.shapes(), model.value_ranges()
    n = len(layers)
    specs: list[EngineSpec] = []

    def at(j):
        return layers[j] if j < n else None

    def describe(layer):
        return f"layer {layer.name!r} of kind {layer.kind!r}" if layer is not None else "the end of the model"

    def requant_after(j, after):
        if not isinstance(at(j), ir.Requant):
            raise ir.ModelError(f"layer {after.name!r} ({after.kind}) must be followed by a requant "
                                f"layer, found {describe(at(j))}; supported sequences: {SUPPORTED}")
        return layers[j]

    def direct(layer, rq, names, in_shape, in_range, out_shape, ops, dense):
        return DirectSpec(layer.name, tuple(names), tuple(in_shape), tuple(out_shape), tuple(in_range),
                          layer=layer, requant=rq, op=ops[type(layer)], dense=dense, kind=layer.kind)

    i = 0
    while i < n:
        layer = layers[i]
        if type(layer) in CONV_OPS or isinstance(layer, ir.WinogradAdderConv2d):
            rq = requant_after(i + 1, layer)
            if isinstance(layer, ir.WinogradAdderConv2d):
                specs.append(WinogradSpec(layer.name, (layer.name, rq.name), tuple(in_shapes[i]),
                                          tuple(out_shapes[i + 1]), tuple(in_ranges[i]), layer=layer,
                                          requant=rq, kind=layer.kind))
            else:
                specs.append(direct(layer, rq, [layer.name, rq.name], in_shapes[i], in_ranges[i],
                                    out_shapes[i + 1], CONV_OPS, False))
            i += 2
        elif isinstance(layer, (ir.MaxPool2d, ir.SumPool2d, ir.GlobalSumPool2d)):
            specs.append(_pool_spec(layer, in_shapes[i], out_shapes[i], in_ranges[i],
                                    out_ranges[i]))
            i += 1
        elif isinstance(layer, ir.Flatten):
            dense = at(i + 1)
            if type(dense) not in DENSE_OPS:
                kinds = ", ".join(cls.kind for cls in DENSE_OPS)
                raise ir.ModelError(f"layer {layer.name!r} (flatten) must be followed by a dense layer "
                                    f"({kinds}), found {describe(dense)}; supported sequences: {SUPPORTED}")
            rq = requant_after(i + 2, dense)
            in_shape = in_shapes[i] if len(in_shapes[i]) == 3 else (in_shapes[i][0], 1, 1)
            specs.append(direct(dense, rq, [layer.name, dense.name, rq.name], in_shape, in_ranges[i],
                                out_shapes[i + 2], DENSE_OPS, True))
            i += 3
            # Further dense layers, each over the previous one's output as a 1×1 map.
            while type(at(i)) in DENSE_OPS:
                dense = layers[i]
                rq = requant_after(i + 1, dense)
                specs.append(direct(dense, rq, [dense.name, rq.name], (in_shapes[i][0], 1, 1),
                                    in_ranges[i], out_shapes[i + 1], DENSE_OPS, True))
                i += 2
            if i != n:
                raise ir.ModelError(f"{describe(layers[i])} follows the dense layers; only dense + "
                                    f"requant pairs may follow a flatten, the last ending the model; "
                                    f"supported: {SUPPORTED}")
        elif isinstance(layer, ir.Requant):
            raise ir.ModelError(f"requant layer {layer.name!r} must follow a conv or dense layer (its "
                                f"engine computes both); supported: {SUPPORTED}")
        elif type(layer) in DENSE_OPS:
            raise ir.ModelError(f"dense layer {layer.name!r} must follow a flatten layer (or another "
                                f"dense layer's requant); supported: {SUPPORTED}")
        else:
            raise ir.ModelError(f"{describe(layer)} has no hardware engine yet; supported: {SUPPORTED}")
    if not specs or not (isinstance(specs[-1], DirectSpec) and specs[-1].dense):
        raise ir.ModelError(f"the model must end with flatten, a dense layer and a requant to give "
                            f"one beat of class scores per image; supported: {SUPPORTED}")
    classes = tuple(out_shapes[-1][:1])
    name = "argmax" if argmax else "output"
    return [*specs, HeadSpec(name, (), classes, classes, tuple(out_ranges[-1]),
                             kind="argmax" if argmax else "raw", argmax=argmax)]


def _pool_spec(layer, in_shape, out_shape, in_range, out_range) -> PoolSpec:
    """The spec of a pool layer: a max pool of stride ``size`` without padding is a
    :class:`PoolSpec`; any other max or sum pool runs over the window generator
    (:class:`WindowPoolSpec`); the global sum is a :class:`GlobalPoolSpec`."""
    common = dict(name=layer.name, layers=(layer.name,), in_shape=tuple(in_shape),
                  out_shape=tuple(out_shape), in_range=tuple(in_range), kind=layer.kind)
    if isinstance(layer, ir.GlobalSumPool2d):
        return GlobalPoolSpec(**common, size=in_shape[1], out_range=tuple(out_range))
    if isinstance(layer, ir.MaxPool2d) and layer.stride == layer.size and layer.padding == 0:
        return PoolSpec(**common, size=layer.size)
    return WindowPoolSpec(**common, size=layer.size, stride=layer.stride, padding=layer.padding,
                          op="max" if isinstance(layer, ir.MaxPool2d) else "sum",
                          out_range=tuple(out_range))
