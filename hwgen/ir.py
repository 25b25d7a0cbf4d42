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
from .kinds import (AdderConv2d, AdderDense, Conv2d, ConvLayer, Dense, DenseLayer, Flatten, Layer,
                    GlobalSumPool2d, MaxPool2d, ModelError, Requant, ShiftConv2d, ShiftDense,
                    SumPool2d, WinogradAdderConv2d,
                    kind_class, layer_kinds, register, split_power_of_two)
from .util import atomic_write

__all__ = [
    "FORMAT", "FORMAT_VERSION", "Model", "ModelError", "Layer", "bits_for", "signed_bits_for",
    "csd", "csd_round", "abs_diff_range", "l1_range", "mac_range", "affine_range",
    "layer_kinds", "kind_class", "register", "split_power_of_two", "AdderConv2d", "AdderDense",
    "Conv2d", "Dense", "ShiftConv2d", "ShiftDense", "WinogradAdderConv2d", "Requant",
    "MaxPool2d", "SumPool2d", "GlobalSumPool2d", "Flatten", "INT64_MAX",
]

# Names the code of other modules used before the registry (kept for compatibility).
_Conv, _Dense, _fits = ConvLayer, DenseLayer, fits
_mac_range, _affine_range, _l1_range = mac_range, affine_range, l1_range

FORMAT = "hwgen-integer-model"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- model

@dataclass
class Model:
    """An integer model: input description plus a list of layers.

    The input is unsigned, ``input_bits`` wide; ``input_scale`` is the real value of one
    input LSB (the host quantizes ``round(x / input_scale)`` before streaming).
    The model's output is the last layer's output; ``argmax`` of it is the class.
    """

    name: str
    input_shape: tuple[int, int, int]
    input_bits: int
    input_scale: float
    layers: list[Layer]
    classes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.input_shape = tuple(int(v) for v in self.input_shape)
        self.validate()

    def validate(self) -> None:
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ModelError(f"input_shape must be C×H×W with positive sizes, got {self.input_shape}")
        if not 1 <= self.input_bits <= 16:
            raise ModelError(f"input_bits must be in [1, 16], got {self.input_bits}")
        if not self.layers:
            raise ModelError("the model has no layers")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ModelError("layer names must be unique")
        shapes = self.shapes()  # raises on inconsistent shapes
        if len(shapes[-1]) != 1:
            raise ModelError(f"the last layer must give a flat vector of class scores, got shape {shapes[-1]}")
        if self.classes and len(self.classes) != shapes[-1][0]:
            raise ModelError(f"{len(self.classes)} class names for {shapes[-1][0]} outputs")

    @property
    def input_range(self) -> tuple[int, int]:
        return 0, (1 << self.input_bits) - 1

    def shapes(self) -> list[tuple[int, ...]]:
        """Output shape of every layer (excluding the batch dimension)."""
        shape, out = self.input_shape, []
        for layer in self.layers:
            shape = tuple(int(v) for v in layer.out_shape(shape))
            out.append(shape)
        return out

    def in_shapes(self) -> list[tuple[int, ...]]:
        return [self.input_shape] + self.shapes()[:-1]

    def value_ranges(self) -> list[tuple[int, int]]:
        """Exact worst-case output interval of every layer, for any input in range."""
        lo, hi = self.input_range
        out = []
        for layer in self.layers:
            try:
                lo, hi = layer.out_range(lo, hi)
                _fits(lo, hi)
            except OverflowError as e:
                raise ModelError(f"{layer.name}: a derived value ({e}) does not fit int64; "
                                 "the golden model would wrap") from None
            out.append((int(lo), int(hi)))
        return out

    def in_ranges(self) -> list[tuple[int, int]]:
        return [self.input_range] + self.value_ranges()[:-1]

    @property
    def num_classes(self) -> int:
        return self.shapes()[-1][0]

    # ------------------------------------------------------------------ save / load

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "input_bits": int(self.input_bits),
            "input_scale": float(self.input_scale),
            "classes": list(self.classes),
            "meta": self.meta,
            "layers": [layer.to_json() for layer in self.layers],
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``model.json`` and ``model.npz`` into ``directory``, atomically each."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for i, layer in enumerate(self.layers):
            for key, arr in layer.arrays().items():
                arrays[f"{i}.{key}"] = np.asarray(arr, dtype=np.int64)
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
        if doc.get("version") != FORMAT_VERSION:
            raise ModelError(f"{manifest}: format version {doc.get('version')}, this hwgen reads {FORMAT_VERSION}")
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
        try:
            layers = []
            for i, spec in enumerate(doc["layers"]):
                spec = dict(spec)
                kind = spec.pop("kind")
                try:
                    layer_cls = kind_class(kind)
                except ModelError as e:
                    raise ModelError(f"layer {i}: {e}") from None
                prefix = f"{i}."
                arrays_i = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
                layers.append(layer_cls.from_saved(spec, arrays_i, f"layer {i} ({kind})"))
            return cls(name=doc["name"], input_shape=tuple(doc["input_shape"]),
                       input_bits=int(doc["input_bits"]), input_scale=float(doc["input_scale"]),
                       layers=layers, classes=list(doc.get("classes", [])), meta=dict(doc.get("meta", {})))
        except ModelError:
            raise
        except (KeyError, TypeError) as e:
            raise ModelError(f"malformed integer model: {type(e).__name__} {e}") from None
