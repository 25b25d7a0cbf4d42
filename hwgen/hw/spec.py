"""Typed engine specs and their foldings: what the planner (:mod:`hwgen.hw.plan`) chooses and
the engines are built from.

A *folding* says how much of an engine runs in parallel; each engine family has its own type:

* :class:`DirectFolding` ``(pe, simd, weights)`` for the direct conv / dense engine
  (:class:`~hwgen.hw.conv.ConvEngine`, any lane arithmetic);
* :class:`WinogradFolding` ``(pe, overlap)`` for the Winograd tile engine
  (:class:`~hwgen.hw.winograd.WinogradEngine`);
* :class:`PoolFolding` ``(lanes)`` for the pool engines (:mod:`hwgen.hw.pool`: channels, or for
  a window pool taps, per cycle).

A user's override (``hwgen build --fold``, a sweep spec's foldings, the manifest read back) is
parsed and validated once, by :func:`parse_overrides`: a dict ``{layer: {key: value}}`` of the
keys of :data:`FOLDING_KEYS` with values of the right type.  Which keys fit which layer is only
known with the model: :meth:`Folding.override` checks that when the planner applies them.

An *engine spec* (:class:`DirectSpec`, :class:`WinogradSpec`, :class:`PoolSpec` and its
:class:`WindowPoolSpec` and :class:`GlobalPoolSpec`, :class:`HeadSpec`) is one engine
of the pipeline: the layers it computes, its shapes and input interval, and its folding.  The
hardware dispatches on these types, not on layer-kind strings; where it needs the arithmetic of
a layer, the spec carries it as :class:`LaneOp`.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, fields, replace
from typing import ClassVar

from .. import ir

__all__ = ["LaneOp", "WeightMode", "Folding", "DirectFolding", "WinogradFolding", "PoolFolding",
           "FOLDINGS", "FOLDING_KEYS", "FoldingError", "parse_overrides", "parse_fold_items",
           "folding_from_dict", "EngineSpec", "DirectSpec", "WinogradSpec", "PoolSpec",
           "WindowPoolSpec", "GlobalPoolSpec", "HeadSpec"]


class FoldingError(ir.ModelError):
    """A folding override that is malformed or does not fit its layer (one line)."""


class LaneOp(str, enum.Enum):
    """The arithmetic of a direct engine's lanes (:class:`~hwgen.hw.pe.Lane`)."""

    #: ``|x - w|`` (AdderNet), the PE delivers the magnitude of ``-Σ|x - w|``.
    L1 = "l1"
    #: ``sign · (x << shift)`` (DeepShift), a barrel shifter.
    SHIFT = "shift"
    #: ``x · w`` (the multiplier baseline).
    MAC = "mac"


class WeightMode(str, enum.Enum):
    """Where a direct engine holds its weights (see :class:`~hwgen.hw.conv.ConvEngine`)."""

    #: A weight memory read in step with the window.
    ROM = "rom"
    #: Constants in the logic.
    CONST = "const"


def _positive(where: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FoldingError(f"{where}: {key}={value!r} must be a positive integer")
    return value


def _weights(where: str, key: str, value) -> str:
    if value not in [m.value for m in WeightMode]:
        raise FoldingError(f"{where}: weights={value!r}; use 'rom' (a weight memory) or 'const' "
                           f"(weights folded into the logic)")
    return str(value)


def _flag(where: str, key: str, value) -> int:
    if value not in (0, 1) or isinstance(value, float):
        raise FoldingError(f"{where}: overlap={value!r}; use 1 (a second tile buffer, a beat every "
                           f"4 cycles) or 0 (none, every 7 cycles)")
    return int(value)


class Folding:
    """Base of the foldings: a frozen dataclass whose fields are its keys."""

    #: What the folding is of, for messages.
    ENGINE: ClassVar[str] = ""
    #: The check of each key's value: ``(where, key, value) -> value``.
    CHECKS: ClassVar[dict] = {}

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def override(self, values: dict, where: str) -> "Folding":
        """This folding with the keys of ``values`` (checked by :func:`parse_overrides`)
        replaced; a key of another engine's folding is refused."""
        extra = [k for k in values if k not in self.keys()]
        if extra:
            raise FoldingError(f"{where}: unknown keys {extra}; use {', '.join(map(repr, self.keys()))} "
                               f"({self.ENGINE})")
        return replace(self, **values)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DirectFolding(Folding):
    """Folding of a direct conv / dense engine: ``pe`` output channels in parallel (divides
    ``O``), ``simd`` taps per PE per cycle (:func:`~hwgen.hw.window.valid_simd`), ``weights``
    a :class:`WeightMode` value."""

    pe: int
    simd: int
    weights: str = WeightMode.ROM.value

    ENGINE: ClassVar[str] = "a conv / dense engine"
    CHECKS: ClassVar[dict] = {"pe": _positive, "simd": _positive, "weights": _weights}


@dataclass(frozen=True)
class WinogradFolding(Folding):
    """Folding of the Winograd tile engine: ``pe`` output channels in parallel (divides
    ``O``), ``overlap`` 1 (a second tile buffer, a beat every 4 cycles) or 0 (every 7)."""

    pe: int
    overlap: int

    ENGINE: ClassVar[str] = "the Winograd tile engine (its lanes are fixed, u sits in a ROM)"
    CHECKS: ClassVar[dict] = {"pe": _positive, "overlap": _flag}


@dataclass(frozen=True)
class PoolFolding(Folding):
    """Folding of a pool engine: ``lanes`` channels compared per cycle (divides ``C``); for a
    :class:`WindowPoolSpec` the taps of a beat (:meth:`~hwgen.hw.pool.WindowPoolEngine.valid_simd`)."""

    lanes: int

    ENGINE: ClassVar[str] = "a pool engine"
    CHECKS: ClassVar[dict] = {"lanes": _positive}


FOLDINGS = (DirectFolding, WinogradFolding, PoolFolding)
#: Every key an override may hold, in the order of ``FOLDINGS``.
FOLDING_KEYS = tuple(dict.fromkeys(k for cls in FOLDINGS for k in cls.keys()))
_CHECKS = {k: check for cls in FOLDINGS for k, check in cls.CHECKS.items()}
#: The usage line of an override, for messages and ``--help``.
FOLDING_USAGE = ("conv/dense: pe, simd, weights:rom|const; Winograd: pe, overlap:0|1; "
                 "pools: lanes")


def parse_overrides(table, where: str = "folding") -> dict[str, dict]:
    """``{layer: {key: value}}`` from ``table``, a mapping of layer names to mappings of keys
    of :data:`FOLDING_KEYS`, every value checked (a positive integer, ``weights`` ``rom`` or
    ``const``, ``overlap`` 0 or 1).  The one parser of ``--fold``, sweep specs and manifests;
    raises :class:`FoldingError` naming ``where``."""
    if not isinstance(table, dict):
        raise FoldingError(f"{where} must be a table {{layer = {{key = value}}}}, not {table!r}")
    out = {}
    for layer, fold in table.items():
        at = f"{where} of {layer!r}"
        if not isinstance(fold, dict) or not fold:
            raise FoldingError(f"{at} needs a table of keys ({FOLDING_USAGE}), got {fold!r}")
        unknown = [k for k in fold if k not in FOLDING_KEYS]
        if unknown:
            raise FoldingError(f"{at}: unknown keys {unknown}; use {', '.join(map(repr, FOLDING_KEYS))}")
        out[str(layer)] = {k: _CHECKS[k](at, k, v) for k, v in fold.items()}
    return out


def parse_fold_items(items, where: str = "--fold") -> dict[str, dict]:
    """``["conv1=pe:2,simd:9", ...]`` (the ``--fold`` syntax) → :func:`parse_overrides`."""
    table = {}
    for item in items:
        layer, eq, text = str(item).partition("=")
        pairs = [kv.partition(":") for kv in text.split(",")]
        if not eq or not layer or any(not k or not sep for k, sep, _ in pairs):
            raise FoldingError(f"{where} {item!r}: expected LAYER=KEY:VALUE,... ({FOLDING_USAGE})")
        table.setdefault(layer, {}).update(
            {k: int(v) if v.lstrip("-").isdigit() else v for k, _, v in pairs})
    return parse_overrides(table, where)


def folding_from_dict(values: dict, where: str = "folding") -> Folding:
    """The folding whose keys ``values`` has (a manifest's entry read back)."""
    for cls in FOLDINGS:
        if set(values) == set(cls.keys()):
            return cls(**parse_overrides({"": values}, where)[""])
    raise FoldingError(f"{where}: {sorted(values)} are the keys of no folding")


# --------------------------------------------------------------------------- engine specs

@dataclass(frozen=True, eq=False)
class EngineSpec:
    """One engine of the pipeline.

    ``name`` is the engine's (its main layer's) name, ``layers`` every layer it computes,
    ``in_shape`` / ``out_shape`` the ``(C, H, W)`` (or ``(O,)``) of its streams and
    ``in_range`` the exact interval of its inputs; ``kind`` the main layer's kind, a label for
    the manifest (nothing in :mod:`hwgen.hw` decides by it)."""

    name: str
    layers: tuple[str, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_range: tuple[int, int]
    kind: str = ""


@dataclass(frozen=True, eq=False)
class DirectSpec(EngineSpec):
    """A direct conv / dense engine: ``layer`` (an :mod:`hwgen.ir` conv or dense layer) and its
    ``requant``; ``dense`` runs a dense layer as a convolution over the whole map; ``op`` the
    lanes' arithmetic."""

    layer: object = None
    requant: ir.Requant | None = None
    op: LaneOp = LaneOp.MAC
    dense: bool = False
    folding: DirectFolding | None = None


@dataclass(frozen=True, eq=False)
class WinogradSpec(EngineSpec):
    """A Winograd tile engine: ``layer`` (:class:`hwgen.ir.WinogradAdderConv2d`) and its
    ``requant``."""

    layer: object = None
    requant: ir.Requant | None = None
    folding: WinogradFolding | None = None


@dataclass(frozen=True, eq=False)
class PoolSpec(EngineSpec):
    """A max-pool engine of ``size × size`` windows."""

    size: int = 1
    folding: PoolFolding | None = None


@dataclass(frozen=True, eq=False)
class WindowPoolSpec(PoolSpec):
    """A pool over the window generator (:class:`~hwgen.hw.pool.WindowPoolEngine`): ``size ×
    size`` windows every ``stride`` pixels with ``padding``, combined by ``op`` (``"max"``, or
    ``"sum"``: an average pool without its divider); ``out_range`` its outputs' interval.  Its
    ``lanes`` are the taps of a beat."""

    stride: int = 1
    padding: int = 0
    op: str = "max"
    out_range: tuple[int, int] = (0, 0)


@dataclass(frozen=True, eq=False)
class GlobalPoolSpec(PoolSpec):
    """The sum of each channel over the whole map (:class:`~hwgen.hw.pool.GlobalSumPoolEngine`,
    a pixel per cycle; its ``lanes`` are all channels); ``out_range`` its outputs' interval."""

    out_range: tuple[int, int] = (0, 0)


@dataclass(frozen=True, eq=False)
class HeadSpec(EngineSpec):
    """The result head: the argmax of the ``in_shape[0]`` class scores, each in ``in_range``,
    or with ``argmax`` False the scores alone (a model whose output is not a classification);
    nothing to fold."""

    argmax: bool = True
    folding: None = None
