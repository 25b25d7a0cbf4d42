"""C×H×W to a flat vector in PyTorch's (channel-major) order: the kind ``flatten``;
from ``torch.nn.Flatten`` (``start_dim=1``, ``end_dim=-1``).  Wiring only: no operations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Layer, Quantizer, register

__all__ = ["Flatten"]


@register
@dataclass
class Flatten(Layer):
    """C×H×W to a flat vector in PyTorch's (channel-major) order."""

    kind: ClassVar[str] = "flatten"
    label: ClassVar[str] = "flatten"

    def out_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def out_range(self, lo, hi):
        return lo, hi

    def execute(self, x):
        return x.reshape(x.shape[0], -1)

    def ops(self, in_shape, out_shape, in_range, out_range):
        return []


class _FlattenQuantizer(Quantizer):
    prefix = "flatten"

    def modules(self):
        from torch import nn
        return (nn.Flatten,)

    def check(self, m):
        if m.start_dim != 1 or m.end_dim != -1:
            return " with start_dim/end_dim other than 1/-1"
        return None

    def layer(self, module, name):
        return Flatten(name=name)


Flatten.quantizers = (_FlattenQuantizer(),)
