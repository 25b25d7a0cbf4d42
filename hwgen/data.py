"""Data sets: the user's, from a ``.npz`` file or arrays, and the bundled digits (the default).

A data set file is a NumPy ``.npz`` archive (read with ``allow_pickle=False``: loading it runs
no code) holding:

``x``
    images, ``N×C×H×W`` (or ``N×H×W`` for one channel), float or integer pixels, not negative.
``y``
    integer labels in ``[0, classes)``, one per image.
``classes`` (optional)
    the class names, a string array; default ``"0"``, ``"1"``, … up to the largest label.
``x_test``, ``y_test`` (optional)
    a test split given as is; else ``split`` (optional, ``N`` booleans or 0/1, true for a test
    image); else a fixed stratified split: 20 % test, seed 0.
``pixel_max`` (optional)
    the value of a full-scale pixel; images are divided by it, so pixels are floats in [0, 1].
    Default: 1 for float images, the largest pixel of the file for integer images.

:func:`digits` is scikit-learn's handwritten digits (8×8, values 0..16, 1,797 images) with the
fixed split; :func:`load` reads a file; :func:`from_arrays` wraps arrays (the Python API).
Every data set carries a description (:meth:`Dataset.describe`: name, sizes, shape, classes and
a SHA-256 of its arrays) that builds record beside the accuracy they report.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import HwgenError, first_line

__all__ = ["Dataset", "DataError", "digits", "digits_dataset", "load", "from_arrays", "CLASSES",
           "MAX_IMAGES", "MAX_PIXELS"]

SEED = 0
TEST_FRACTION = 0.2
PIXEL_MAX = 16.0
CLASSES = [str(i) for i in range(10)]
DIGITS_NAME = "digits"

#: Bounds checked before anything is allocated from a file.
MAX_IMAGES = 10_000_000
MAX_PIXELS = 4096 * 4096  # per channel of one image
MAX_CHANNELS = 4096
MAX_CLASSES = 100_000


class DataError(HwgenError, ValueError):
    """A data set a user can mend (one line)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Float images in [0, 1] (``float32``, ``N×C×H×W``) with integer labels, split in two.

    Members
    -------
    name : str
        The file's stem, ``"digits"`` for the bundled set, or the name given to :func:`from_arrays`.
    classes : tuple of str
        Class names; label ``k`` is ``classes[k]``.
    sha256 : str
        Hash of the arrays (images, labels, split, classes): the same data, the same hash.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    sha256: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(int(v) for v in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        """What a build records of the data its figures came from (JSON values)."""
        return {"name": self.name, "train": int(len(self.x_train)), "test": int(len(self.x_test)),
                "input_shape": list(self.input_shape), "classes": list(self.classes),
                "sha256": self.sha256}

    def check_model(self, input_shape, num_classes: int, what: str = "the model", *,
                    labels: bool = True) -> None:
        """Raise :class:`DataError` unless images (and, with ``labels``, labels) fit a model of
        that shape."""
        if tuple(input_shape) != self.input_shape:
            raise DataError(f"data set {self.name!r} has {_shape(self.input_shape)} images, "
                            f"{what} takes {_shape(input_shape)}")
        if not labels:
            return
        top = int(max(self.y_train.max(initial=0), self.y_test.max(initial=0)))
        if top >= num_classes:
            raise DataError(f"data set {self.name!r} has label {top}, {what} has "
                            f"{num_classes} outputs")


def _shape(shape) -> str:
    return "×".join(str(int(v)) for v in shape)


@lru_cache(maxsize=1)
def digits_dataset() -> Dataset:
    """scikit-learn's digits: float32 ``(N, 1, 8, 8)`` in [0, 1], the fixed 80/20 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / PIXEL_MAX)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return _make(DIGITS_NAME, x, y, None, None, None, CLASSES)


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` of :func:`digits_dataset`."""
    d = digits_dataset()
    return d.x_train, d.y_train, d.x_test, d.y_test


def load(path: str | os.PathLike) -> Dataset:
    """Read a data set file (see the module docstring); :class:`DataError` for a bad one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data set file")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            arrays = {}
            for key in npz.files:
                arrays[key] = _read_member(npz, key, path)
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz data set ({first_line(e)})") from None
    unknown = sorted(set(arrays) - {"x", "y", "classes", "split", "x_test", "y_test", "pixel_max"})
    if unknown:
        raise DataError(f"{path}: unknown array {unknown[0]!r}; a data set holds x, y and optionally "
                        f"classes, split, x_test, y_test, pixel_max")
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: no array {key!r} (images x: N×C×H×W, labels y: N)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: x_test and y_test come together")
    pixel_max = arrays.get("pixel_max")
    if pixel_max is not None:
        if pixel_max.size != 1 or not np.isfinite(pixel_max).all() or float(pixel_max) <= 0:
            raise DataError(f"{path}: pixel_max must be one positive number")
        pixel_max = float(pixel_max)
    classes = arrays.get("classes")
    if classes is not None:
        if classes.ndim != 1 or classes.dtype.kind not in "US":
            raise DataError(f"{path}: classes must be a 1-D array of strings")
        classes = [str(c) for c in classes.tolist()]
    return _from(path.stem, arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test"),
                 arrays.get("split"), classes, pixel_max, where=str(path))


def from_arrays(x, y, *, x_test=None, y_test=None, split=None, classes=None,
                pixel_max: float | None = None, name: str = "arrays") -> Dataset:
    """A data set from arrays (the Python API); the same rules as a file."""
    arrays = [None if a is None else np.asarray(a) for a in (x, y, x_test, y_test, split)]
    return _from(name, *arrays, None if classes is None else [str(c) for c in classes],
                 pixel_max, where=f"data set {name!r}")


def _read_member(npz, key: str, path: Path) -> np.ndarray:
    """One array of the archive, its size checked from the header before it is read."""
    try:
        with npz.zip.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
    except KeyError:
        raise DataError(f"{path}: member {key!r} is not a .npy array") from None
    count = int(np.prod(shape, dtype=object))
    if dtype.hasobject:
        raise DataError(f"{path}: array {key!r} holds Python objects; a data set holds numbers "
                        f"and strings only")
    if count > MAX_IMAGES * 64 * 64 * 3:
        raise DataError(f"{path}: array {key!r} has {count} values, more than hwgen reads")
    return npz[key]


def _from(name, x, y, x_test, y_test, split, classes, pixel_max, *, where) -> Dataset:
    x = _images(x, "x", where)
    y = _labels(y, len(x), "y", where)
    if x_test is not None:
        x_test = _images(x_test, "x_test", where)
        y_test = _labels(y_test, len(x_test), "y_test", where)
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{where}: x_test has {_shape(x_test.shape[1:])} images, "
                            f"x has {_shape(x.shape[1:])}")
        if split is not None:
            raise DataError(f"{where}: give either x_test/y_test or split, not both")
    if pixel_max is None:
        pixel_max = 1.0
        if x.dtype.kind in "iub":
            tops = [int(x.max(initial=0))] + ([int(x_test.max(initial=0))] if x_test is not None else [])
            pixel_max = float(max(max(tops), 1))
    x = (x.astype(np.float32) / np.float32(pixel_max))
    if x_test is not None:
        x_test = (x_test.astype(np.float32) / np.float32(pixel_max))
    top = int(max(y.max(initial=0), -1 if y_test is None else y_test.max(initial=0)))
    if classes is None:
        classes = [str(i) for i in range(top + 1)]
    if not 2 <= len(classes) <= MAX_CLASSES:
        raise DataError(f"{where}: a data set needs 2 to {MAX_CLASSES} classes, got {len(classes)}")
    if top >= len(classes):
        raise DataError(f"{where}: label {top} but only {len(classes)} class names")
    if split is not None:
        split = np.asarray(split)
        if split.shape != (len(x),) or split.dtype.kind not in "biu" or not np.isin(split, (0, 1)).all():
            raise DataError(f"{where}: split must be {len(x)} booleans (true: a test image)")
    return _make(name, x, y, x_test, y_test, split, classes)


def _images(x, key, where) -> np.ndarray:
    if x is None:
        raise DataError(f"{where}: no images {key!r}")
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{where}: {key} must hold numbers, not {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{where}: {key} must be N×C×H×W (or N×H×W), got shape {x.shape}")
    n, c, h, w = x.shape
    if n < 1 or n > MAX_IMAGES:
        raise DataError(f"{where}: {key} must hold 1 to {MAX_IMAGES} images, got {n}")
    if not 1 <= c <= MAX_CHANNELS or h < 1 or w < 1 or h * w > MAX_PIXELS:
        raise DataError(f"{where}: {key} has images of {c}×{h}×{w}, outside what hwgen builds")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where}: {key} has a NaN or infinite pixel")
    if x.dtype.kind != "b" and x.min() < 0:
        raise DataError(f"{where}: {key} has negative pixels; pixels are 0 (black) or more")
    return x


def _labels(y, n, key, where) -> np.ndarray:
    if y is None:
        raise DataError(f"{where}: no labels {key!r}")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind not in "iu" or y.shape != (n,):
        raise DataError(f"{where}: {key} must be {n} integer labels, got {y.dtype} of shape {y.shape}")
    if y.min() < 0:
        raise DataError(f"{where}: {key} has a negative label ({int(y.min())})")
    return y.astype(np.int64)


def _make(name, x, y, x_test, y_test, split, classes) -> Dataset:
    h = hashlib.sha256()
    for a in (x, y, x_test, y_test, split):
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    h.update("\0".join(classes).encode())
    if x_test is None:
        if split is not None:
            test = split.astype(bool)
            if test.all() or not test.any():
                raise DataError(f"data set {name!r}: split must leave images on both sides")
            x, x_test, y, y_test = x[~test], x[test], y[~test], y[test]
        else:
            x, x_test, y, y_test = _split(name, x, y)
    arrays = [np.ascontiguousarray(a) for a in (x, y, x_test, y_test)]
    for a in arrays:
        a.setflags(write=False)
    return Dataset(name, *arrays, classes=tuple(classes), sha256=h.hexdigest())


def _split(name, x, y):
    from sklearn.model_selection import train_test_split

    if len(x) < 2:
        raise DataError(f"data set {name!r}: at least 2 images are needed to split off a test set")
    counts = np.bincount(y)
    present = counts[counts > 0]
    # Stratify where every class can go to both sides (scikit-learn refuses otherwise).
    stratify = y if present.min() >= 2 and len(x) * TEST_FRACTION >= len(present) else None
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SEED,
                                              stratify=stratify)
    return x_tr, x_te, y_tr, y_te
