"""The parameter-free shortcut of the CIFAR ResNets ("option A"): the kind ``subsample_pad``.

It keeps every ``stride``-th row and column of each channel and adds ``pad_before`` zero
channels in front and ``pad_after`` behind, so that the shortcut of a stride-2 stage that
widens ``C`` to ``C + pad_before + pad_after`` channels has the main branch's shape:
``y[pad_before + c, i, j] = x[c, i·stride, j·stride]``, zero in the padded channels.  Wiring
only: no operations.  No quantizer handler here (the model side writes it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Layer, ModelError, register

__all__ = ["SubsamplePad"]


def _count(name, key, value, least):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        what = "a positive integer" if least == 1 else "a non-negative integer"
        raise ModelError(f"{name}: {key} must be {what}, not {value!r}")
    return int(value)


@register
@dataclass
class SubsamplePad(Layer):
    """``C×H×W`` → ``(C + pad_before + pad_after)×⌈H/stride⌉×⌈W/stride⌉``: the rows and columns
    ``0, stride, 2·stride, …`` of every channel, between ``pad_before`` and ``pad_after`` zero
    channels."""

    kind: ClassVar[str] = "subsample_pad"
    label: ClassVar[str] = "subsample and zero-pad (shortcut A)"
    stride: int = 2
    pad_before: int = 0
    pad_after: int = 0

    def __post_init__(self):
        self.stride = _count(self.name, "stride", self.stride, 1)
        self.pad_before = _count(self.name, "pad_before", self.pad_before, 0)
        self.pad_after = _count(self.name, "pad_after", self.pad_after, 0)

    def params(self):
        return {"stride": self.stride, "pad_before": self.pad_before,
                "pad_after": self.pad_after}

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ModelError(f"{self.name}: subsamples a C×H×W map, got shape {tuple(in_shape)}")
        c, h, w = (int(v) for v in in_shape)
        s = self.stride
        return (c + self.pad_before + self.pad_after, -(-h // s), -(-w // s))

    def out_range(self, lo, hi):
        # The padded channels are zeros (even with no padding, an interval that holds 0 keeps
        # one rule for both forms of the shortcut).
        return min(lo, 0), max(hi, 0)

    def execute(self, x):
        s = self.stride
        kept = x[:, :, ::s, ::s]
        pad = ((0, 0), (self.pad_before, self.pad_after), (0, 0), (0, 0))
        return np.pad(kept, pad)

    def ops(self, in_shape, out_shape, in_range, out_range):
        return []
