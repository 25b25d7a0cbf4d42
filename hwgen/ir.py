"""The integer model: the contract between the quantizer, the golden model and the hardware.

An integer model is a list of layers over integer tensors in PyTorch's NCHW layout.
It is saved as a versioned JSON manifest (``model.json``) next to a NumPy archive
(``model.npz``, loaded with ``allow_pickle=False``), and validated when loaded.

Value ranges (and so every bit width) are derived here, once, from the actual
integer weights: :meth:`Model.value_ranges` gives the exact worst-case interval of every
layer's output for any input in the declared input range.  The golden model checks
its tensors against them and the hardware sizes its accumulators from them.

The layer kinds themselves live in the registry, :mod:`hwgen.kinds` (one module per kind);
their classes and the shared arithmetic (:mod:`hwgen.arith`) are re-exported here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arith import (INT64_MAX, abs_diff_range, affine_range, bits_for, csd, csd_round, fits,
                    l1_range, mac_range, signed_bits_for)
from .kinds import (Add, AdderConv2d, AdderDense, Conv2d, ConvLayer, Dense, DenseLayer, Flatten,
                    GlobalSumPool2d, Layer, MaxPool2d, ModelError, Requant, ShiftConv2d,
                    ShiftDense, SubsamplePad, SumPool2d, WinogradAdderConv2d,
                    kind_class, layer_kinds, register, split_power_of_two)
from .util import atomic_write

__all__ = [
    "FORMAT", "FORMAT_VERSION", "INPUT", "Model", "ModelError", "Layer", "bits_for",
    "signed_bits_for",
    "csd", "csd_round", "abs_diff_range", "l1_range", "mac_range", "affine_range",
    "layer_kinds", "kind_class", "register", "split_power_of_two", "AdderConv2d", "AdderDense",
    "Conv2d", "Dense", "ShiftConv2d", "ShiftDense", "WinogradAdderConv2d", "Requant",
    "MaxPool2d", "SumPool2d", "GlobalSumPool2d", "Flatten", "Add", "SubsamplePad", "INT64_MAX",
]

# Names the code of other modules used before the registry (kept for compatibility).
_Conv, _Dense, _fits = ConvLayer, DenseLayer, fits
_mac_range, _affine_range, _l1_range = mac_range, affine_range, l1_range

FORMAT = "hwgen-integer-model"
FORMAT_VERSION = 2
#: The saved versions this hwgen reads.
READS_VERSIONS = (1, 2)

#: The name of the model's input tensor.
INPUT = "input"


# --------------------------------------------------------------------------- model

@dataclass
class Model:
    """An integer model: input description plus a graph of layer nodes (a list, any order).

    The input is unsigned, ``input_bits`` wide; ``input_scale`` is the real value of one
    input LSB (the host quantizes ``round(x / input_scale)`` before streaming).
    The model's output is the tensor ``output`` (default: the last layer's); ``argmax`` of it
    is the class.  Lists aligned with ``layers`` (:meth:`shapes`, :meth:`value_ranges`, …)
    keep the order of ``layers``; :meth:`order` gives a topological order.
    """

    name: str
    input_shape: tuple[int, int, int]
    input_bits: int
    input_scale: float
    layers: list[Layer]
    classes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    output: str = ""

    def __post_init__(self):
        self.input_shape = tuple(int(v) for v in self.input_shape)
        self.validate()

    # ------------------------------------------------------------------ the graph

    def inputs_of(self) -> list[tuple[str, ...]]:
        """The tensors every layer reads: its ``inputs``, or the previous layer's output."""
        out, before = [], INPUT
        for layer in self.layers:
            out.append(tuple(layer.inputs) or (before,))
            before = layer.name
        return out

    @property
    def output_name(self) -> str:
        return self.output or self.layers[-1].name

    @property
    def is_chain(self) -> bool:
        """Every layer reads the one before it and the output is the last: a sequential model."""
        before = [INPUT] + [layer.name for layer in self.layers[:-1]]
        return (all(ins == (b,) for ins, b in zip(self.inputs_of(), before))
                and self.output_name == self.layers[-1].name)

    def order(self) -> list[int]:
        """Indices of ``layers`` in a topological order (stable: the list's order where it is
        one); :class:`ModelError` for an unknown tensor name or a cycle."""
        index = {layer.name: i for i, layer in enumerate(self.layers)}
        wiring = self.inputs_of()
        for layer, ins in zip(self.layers, wiring):
            for t in ins:
                if t != INPUT and t not in index:
                    raise ModelError(f"layer {layer.name!r} reads tensor {t!r}, which no layer "
                                     f"computes (tensors: {INPUT!r} and the layer names)")
        done, order, pending = {INPUT}, [], list(range(len(self.layers)))
        while pending:
            ready = [i for i in pending if all(t in done for t in wiring[i])]
            if not ready:
                names = ", ".join(repr(self.layers[i].name) for i in pending)
                raise ModelError(f"the layers {names} read each other in a cycle; an integer "
                                 f"model is a graph without cycles")
            for i in ready:
                done.add(self.layers[i].name)
            order += ready
            pending = [i for i in pending if i not in ready]
        return order

    def validate(self) -> None:
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ModelError(f"input_shape must be C×H×W with positive sizes, "
                             f"got {self.input_shape}")
        if not 1 <= self.input_bits <= 16:
            raise ModelError(f"input_bits must be in [1, 16], got {self.input_bits}")
        if not self.layers:
            raise ModelError("the model has no layers")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ModelError("layer names must be unique")
        if INPUT in names:
            raise ModelError(f"no layer may be named {INPUT!r}: it names the model's input")
        if self.output_name not in names:
            raise ModelError(f"the output {self.output_name!r} is not a layer of the model")
        for layer, ins in zip(self.layers, self.inputs_of()):
            if len(ins) != layer.arity:
                raise ModelError(f"layer {layer.name!r} ({layer.kind}) reads {len(ins)} tensors, "
                                 f"it takes {layer.arity}")
        self.order()  # raises on an unknown tensor name or a cycle
        read = {t for ins in self.inputs_of() for t in ins}
        dangling = [n for n in names if n not in read and n != self.output_name]
        if dangling:
            raise ModelError(f"the output of layer {dangling[0]!r} is never read (a dangling "
                             f"output); read it, or make it the model's output")
        shapes = self.shapes()  # raises on inconsistent shapes
        out = shapes[names.index(self.output_name)]
        if len(out) != 1:
            raise ModelError(f"the last layer must give a flat vector of class scores, "
                             f"got shape {out}")
        if self.classes and len(self.classes) != out[0]:
            raise ModelError(f"{len(self.classes)} class names for {out[0]} outputs")

    @property
    def input_range(self) -> tuple[int, int]:
        return 0, (1 << self.input_bits) - 1

    def _propagate(self, first, step) -> dict[str, object]:
        """``{tensor: value}`` over the graph in topological order: ``first`` for the input,
        ``step(layer, [values of its inputs])`` for every layer."""
        values, wiring = {INPUT: first}, self.inputs_of()
        for i in self.order():
            layer = self.layers[i]
            values[layer.name] = step(layer, [values[t] for t in wiring[i]])
        return values

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every tensor (excluding the batch dimension), by name."""
        return self._propagate(self.input_shape,
                               lambda layer, ins: tuple(int(v) for v in layer.shape_of(ins)))

    def tensor_ranges(self) -> dict[str, tuple[int, int]]:
        """Exact worst-case interval of every tensor, by name, for any input in range."""
        def step(layer, ins):
            try:
                lo, hi = layer.range_of(ins)
                fits(lo, hi)
            except OverflowError as e:
                raise ModelError(f"{layer.name}: a derived value ({e}) does not fit int64; "
                                 "the golden model would wrap") from None
            return int(lo), int(hi)
        return self._propagate(self.input_range, step)

    def shapes(self) -> list[tuple[int, ...]]:
        """Output shape of every layer (excluding the batch dimension)."""
        shapes = self.tensor_shapes()
        return [shapes[layer.name] for layer in self.layers]

    def in_shape_lists(self) -> list[list[tuple[int, ...]]]:
        """The shapes of the tensors every layer reads."""
        shapes = self.tensor_shapes()
        return [[shapes[t] for t in ins] for ins in self.inputs_of()]

    def in_shapes(self) -> list[tuple[int, ...]]:
        """The shape of every layer's (first) input."""
        return [shapes[0] for shapes in self.in_shape_lists()]

    def value_ranges(self) -> list[tuple[int, int]]:
        """Exact worst-case output interval of every layer, for any input in range."""
        ranges = self.tensor_ranges()
        return [ranges[layer.name] for layer in self.layers]

    def in_range_lists(self) -> list[list[tuple[int, int]]]:
        """The intervals of the tensors every layer reads."""
        ranges = self.tensor_ranges()
        return [[ranges[t] for t in ins] for ins in self.inputs_of()]

    def in_ranges(self) -> list[tuple[int, int]]:
        """The interval of every layer's (first) input."""
        return [ranges[0] for ranges in self.in_range_lists()]

    @property
    def num_classes(self) -> int:
        return self.tensor_shapes()[self.output_name][0]

    # ------------------------------------------------------------------ save / load

    def to_json(self) -> dict:
        layers = [{**layer.to_json(), "inputs": list(ins)}
                  for layer, ins in zip(self.layers, self.inputs_of())]
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "input_bits": int(self.input_bits),
            "input_scale": float(self.input_scale),
            "classes": list(self.classes),
            "meta": self.meta,
            "layers": layers,
            "output": self.output_name,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``model.json`` and ``model.npz`` into ``directory``, atomically each."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"{layer.name}.{key}": np.asarray(arr, dtype=np.int64)
                  for layer in self.layers for key, arr in layer.arrays().items()}
        atomic_write(directory / "model.npz", lambda f: np.savez(f, **arrays), binary=True)
        text = json.dumps(self.to_json(), indent=2) + "\n"
        atomic_write(directory / "model.json", lambda f: f.write(text))
        return directory / "model.json"

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Model":
        """Load from a directory holding ``model.json`` + ``model.npz``, or from the JSON path."""
        path = Path(path)
        manifest = path / "model.json" if path.is_dir() else path
        if not manifest.is_file():
            raise ModelError(f"no integer model at {path} (expected model.json and model.npz)")
        try:
            doc = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"{manifest}: not valid JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ModelError(f"{manifest}: not an hwgen integer model")
        if doc.get("version") not in READS_VERSIONS:
            raise ModelError(f"{manifest}: format version {doc.get('version')}, this hwgen reads "
                             f"{' and '.join(map(str, READS_VERSIONS))}")
        npz = manifest.with_suffix(".npz")
        try:
            with np.load(npz, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except FileNotFoundError:
            raise ModelError(f"{npz}: missing (the arrays of {manifest})") from None
        except (ValueError, OSError) as e:
            raise ModelError(f"{npz}: not a readable NumPy archive ({e})") from None
        return cls.from_json(doc, arrays)

    @classmethod
    def from_json(cls, doc: dict, arrays: dict[str, np.ndarray]) -> "Model":
        """The model of a saved manifest ``doc`` and its arrays: version 2 keys the arrays by
        node name (``conv1.weight``), version 1 (and a ``doc`` without a version) by index."""
        by_name = doc.get("version", FORMAT_VERSION) >= 2
        try:
            layers = []
            for i, spec in enumerate(doc["layers"]):
                spec = dict(spec)
                kind = spec.pop("kind")
                try:
                    layer_cls = kind_class(kind)
                except ModelError as e:
                    raise ModelError(f"layer {i}: {e}") from None
                if "inputs" in spec:
                    spec["inputs"] = tuple(spec["inputs"])
                prefix = f"{spec['name']}." if by_name else f"{i}."
                arrays_i = {k[len(prefix):]: v for k, v in arrays.items()
                            if k.startswith(prefix) and "." not in k[len(prefix):]}
                layers.append(layer_cls.from_saved(spec, arrays_i, f"layer {i} ({kind})"))
            return cls(name=doc["name"], input_shape=tuple(doc["input_shape"]),
                       input_bits=int(doc["input_bits"]), input_scale=float(doc["input_scale"]),
                       layers=layers, classes=list(doc.get("classes", [])),
                       meta=dict(doc.get("meta", {})), output=str(doc.get("output", "")))
        except ModelError:
            raise
        except (KeyError, TypeError) as e:
            raise ModelError(f"malformed integer model: {type(e).__name__} {e}") from None
