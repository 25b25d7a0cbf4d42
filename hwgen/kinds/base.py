"""What every layer kind shares: the node base class, the registry, and the small helpers.

A layer kind is one subclass of :class:`Layer`, registered with :func:`register`, that defines in
one place everything hwgen knows about it:

=====================  =========================================================================
``kind``               its name in the saved model (``model.json``)
``out_shape``          the output shape for an input shape (``ModelError`` when they do not fit)
``out_range``          the exact worst-case output interval for inputs in ``[lo, hi]``
``execute``            the golden executor: int64 NumPy, bit-exact, on a batch ``(N, ...)``
``ops``                the energy counter: the operations of one inference (:class:`Op`)
``label``              the report's name for it
``arithmetic``         what one weight tap computes (:class:`hwgen.arith.Arithmetic`), or None
``quantizers``         how PyTorch modules become it (:class:`Quantizer`; torch imported lazily)
=====================  =========================================================================

A node of the integer model graph names the tensors it reads in ``inputs`` (tensor names: the
model's input, or another node's name); a kind with several inputs sets ``arity`` and overrides
:meth:`Layer.shape_of`, :meth:`Layer.range_of` and :meth:`Layer.run`, which the model, the golden
model and the energy count call.  Nothing here imports torch, the golden model or the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import HwgenError
from ..arith import INT64_MAX, Arithmetic, bits_for, signed_bits_for

__all__ = ["BLOCK_ELEMENTS", "ModelError", "Layer", "OP_TYPES", "Op", "Quantizer",
           "QuantizedLayer", "register",
           "kind_class", "layer_kinds", "registered", "int_array", "width", "swidth"]


#: Upper bound on the elements of one broadcast block of a golden kernel (keeps memory flat).
BLOCK_ELEMENTS = 1 << 24


class ModelError(HwgenError, ValueError):
    """An integer model that is malformed, inconsistent or unsupported."""


_KINDS: dict[str, type["Layer"]] = {}


def register(cls):
    """Class decorator: make ``cls`` (a :class:`Layer` subclass) the kind named ``cls.kind``."""
    if not cls.kind or not isinstance(cls.kind, str):
        raise TypeError(f"{cls.__name__}: a layer kind needs a non-empty name in `kind`")
    if _KINDS.get(cls.kind, cls) is not cls:
        raise TypeError(f"layer kind {cls.kind!r} is already {_KINDS[cls.kind].__name__}")
    _KINDS[cls.kind] = cls
    return cls


def kind_class(kind: str) -> type["Layer"]:
    """The class of layer kind ``kind``; :class:`ModelError` naming the supported kinds."""
    try:
        return _KINDS[kind]
    except (KeyError, TypeError):
        raise ModelError(f"kind {kind!r} is not supported (supported: {', '.join(layer_kinds())})"
                         ) from None


def layer_kinds() -> list[str]:
    """Names of every registered layer kind."""
    return sorted(_KINDS)


def registered() -> list[type["Layer"]]:
    """Every registered layer class, in order of registration."""
    return list(_KINDS.values())


def int_array(name, value, ndim) -> np.ndarray:
    """``value`` as an int64 array of ``ndim`` dimensions, or :class:`ModelError`."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise ModelError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ModelError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    if arr.size and arr.dtype.kind == "u" and int(arr.max()) > INT64_MAX:
        raise ModelError(f"{name}: value {int(arr.max())} does not fit int64")
    return arr.astype(np.int64)


def width(lo, hi) -> int:
    """Bits of ``[lo, hi]`` (unsigned when ``lo >= 0``)."""
    return bits_for(lo, hi)[0]


def swidth(lo, hi) -> int:
    """Bits of ``[lo, hi]`` as a signed value."""
    return signed_bits_for(lo, hi)


#: The operation types of the energy count (:class:`Op`).
OP_TYPES = ("add", "absdiff", "shift", "mult", "compare")


@dataclass
class Op:
    """``count`` operations ``op`` (one of :data:`OP_TYPES`) of ``bits`` width
    (an int, or ``(a, b)`` for a multiplier) in one inference."""

    op: str
    bits: object
    count: int

    def key(self):
        return self.op, self.bits if isinstance(self.bits, int) else tuple(self.bits)


@dataclass
class Layer:
    """Base of all layer kinds: a node of the integer model graph.

    ``name`` is unique within a model and names the node's output tensor; ``inputs`` names the
    tensors it reads (keyword only; empty in a layer list means "the previous layer's output",
    which :class:`hwgen.ir.Model` fills in)."""

    name: str
    inputs: tuple[str, ...] = field(default=(), kw_only=True)
    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""
    arity: ClassVar[int] = 1
    arithmetic: ClassVar[Arithmetic | None] = None
    array_fields: ClassVar[tuple[str, ...]] = ()
    quantizers: ClassVar[tuple["Quantizer", ...]] = ()

    # A single-input kind overrides these four.
    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def out_range(self, lo: int, hi: int) -> tuple[int, int]:
        """Exact interval of the output for any input with values in ``[lo, hi]``."""
        raise NotImplementedError

    def execute(self, x: np.ndarray) -> np.ndarray:
        """The golden executor: this layer on an int64 batch ``(N, ...)``."""
        raise NotImplementedError

    def ops(self, in_shape, out_shape, in_range, out_range) -> list[Op]:
        """Operations of one inference (the energy counter)."""
        raise NotImplementedError

    #: For a kind that is a cheaper form of a direct layer (Winograd): that layer's kind.
    direct_form: ClassVar[type["Layer"] | None] = None

    def direct_ops(self, in_shape, out_shape) -> dict[str, int] | None:
        """For a kind that is a cheaper form of a direct layer (Winograd): the op counts of that
        direct form by type, to set against its own; None for any other kind."""
        return None

    @property
    def negated(self) -> bool:
        """The output is a negated distance (l1: nearer is larger), so a requantizer that maps
        it onto activations in the usual direction has a negative multiplier."""
        return self.arithmetic is Arithmetic.L1

    @classmethod
    def random(cls, rng: np.random.Generator, name: str, shape: tuple[int, ...], **params):
        """A layer of this kind with random weights of ``shape`` (the weight shape of a direct
        layer), for test models (:mod:`hwgen.testmodels`)."""
        raise NotImplementedError(f"{cls.kind} has no random weights")

    def params(self) -> dict:
        return {}

    # The node interface (lists, one entry per input); a kind of several inputs overrides it.
    def shape_of(self, in_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        return self.out_shape(in_shapes[0])

    def range_of(self, in_ranges: list[tuple[int, int]]) -> tuple[int, int]:
        return self.out_range(*in_ranges[0])

    def run(self, xs: list[np.ndarray]) -> np.ndarray:
        return self.execute(xs[0])

    def ops_of(self, in_shapes, out_shape, in_ranges, out_range) -> list[Op]:
        return self.ops(in_shapes[0], out_shape, in_ranges[0], out_range)

    # Shared machinery.
    @classmethod
    def from_saved(cls, params: dict, arrays: dict[str, np.ndarray], where: str) -> "Layer":
        """The layer saved as JSON ``params`` plus its ``arrays`` (by field name); ``where``
        names it in errors (``layer 3 (conv2d)``)."""
        for key in cls.array_fields:
            if key not in arrays:
                raise ModelError(f"{where}: array {key!r} missing from the .npz{cls._alternative}")
            params[key] = arrays[key]
        return cls(**params)

    _alternative: ClassVar[str] = ""

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, **self.params()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in self.array_fields}


@dataclass
class QuantizedLayer:
    """What a :class:`Quantizer` makes of one weight module.

    ``acc_scale``: the real value of one accumulator LSB, per output channel; ``layer_scale``:
    the layer's entry of ``meta["layer_scales"]``; ``offset``: per channel, what clipped weights
    add to the accumulator (removed in the requantizer's bias); ``meta``: this layer's entries
    of model-level metadata (``{"adder_offsets": [...]}`` goes to
    ``meta["adder_offsets"][name]``)."""

    layer: Layer
    acc_scale: np.ndarray
    layer_scale: float
    offset: np.ndarray
    meta: dict = field(default_factory=dict)


class Quantizer:
    """How PyTorch modules of some types become one integer layer (torch imported lazily).

    ``modules()`` returns the module classes it takes.  A *weighted* quantizer (``weighted =
    True``) makes a weight layer that a requantizer follows: it gives ``input_scale`` (the scale
    the tensor feeding it needs), ``quantize`` (a :class:`QuantizedLayer`) and ``bias`` (the
    module's own bias, folded into the requantizer).  Any other quantizer maps the module 1:1
    with ``layer``.  ``prefix`` numbers the integer layers (``conv0``, ``dense0``, ``pool0``…);
    ``rank`` is 4 for a layer on C×H×W tensors (its BatchNorm is ``BatchNorm2d``), else 2.
    ``check`` returns why a module cannot be mapped (its options), or None.
    """

    prefix: ClassVar[str] = "layer"
    weighted: ClassVar[bool] = False
    rank: ClassVar[int] = 4

    def modules(self) -> tuple[type, ...]:
        raise NotImplementedError

    def check(self, module) -> str | None:
        return None

    def input_scale(self, module, a: float, top: int, signed: bool, weight_bits: int) -> float:
        """Scale of the tensor feeding ``module``: ``a / top`` unless the kind needs more."""
        return a / top

    def quantize(self, module, name: str, s_in: float, options: dict) -> QuantizedLayer:
        raise NotImplementedError

    def bias(self, module):
        """The module's bias tensor to fold into the requantizer, or None."""
        return None

    def layer(self, module, name: str) -> Layer:
        raise NotImplementedError

    def layer_for(self, module, name: str, in_shape) -> Layer:
        """:meth:`layer`, for a kind that needs the input's shape ``(N, C, H, W)`` too."""
        return self.layer(module, name)

    def divisor(self, module, in_shape) -> int:
        """What the sum of a non-weighted layer is divided by in the float model (an average
        pool's ``d``; its integer layer is the sum, the quantizer puts ``1/d`` into the scale)."""
        return 1
