"""AdderNet layers (Chen et al., "AdderNet: Do We Really Need Multiplications in Deep
Learning?", CVPR 2020): the output is the negative l1 distance between input and filter::

    y[o] = -sum_k |x[k] - w[o, k]|

computed without a multiplication.  Training uses the paper's surrogate gradients, in
:class:`AdderFunction`:

* weight gradient, full precision (Eq. 5):  dy/dw = x - w
* input gradient, HardTanh-clipped (Eq. 6): dy/dx = HT(w - x) = clamp(w - x, -1, 1)
* adaptive learning rate per layer (Eq. 12): the weight gradient of a layer is multiplied
  by ``alpha = eta * sqrt(k) / ||grad_w||_2`` (``k`` the number of weight elements), so every
  adder layer takes steps of the same size whatever the magnitude of its raw gradient.
  This is done *inside the backward*, so ``w.grad`` already holds the scaled gradient and any
  optimizer (the paper uses SGD with momentum) applies ``lr * alpha * grad``.  It is
  switched by the layer attribute ``eta``: a float enables it, ``None`` disables it (then
  ``w.grad`` is the raw full-precision gradient).

Memory: the backward does not keep an ``N x O x K x L`` difference tensor.  The autograd
function saves exactly two tensors: the unfolded input ``x`` as an ``(M, K)`` matrix
(``M = N * L`` receptive-field positions for a convolution, ``M = N`` for a dense layer,
``K = C * KH * KW`` or ``in_features``) and the weight ``(O, K)``.  The weight gradient is
two matrix products (``g^T x - w * sum(g)``); the input gradient recomputes
``clamp(w - x, -1, 1)`` in blocks of output channels of at most ``_BLOCK_ELEMENTS`` elements.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AdderFunction", "adder_l1", "adder_conv2d", "AdderConv2d", "AdderLinear", "DEFAULT_ETA"]

DEFAULT_ETA = 0.1  # the paper's eta
_BLOCK_ELEMENTS = 1 << 22  # upper bound on one recomputed (M, O_block, K) block in backward


class AdderFunction(torch.autograd.Function):
    """``y = -cdist_l1(x, w)``: ``x (M, K)``, ``w (O, K)`` → ``y (M, O)``, with AdderNet's backward.

    Also batched: ``x (B, M, K)``, ``w (B, O, K)`` → ``y (B, M, O)`` (see :func:`adder_l1`; ``p``).

    ``eta`` (float or ``None``) enables the adaptive learning-rate scaling of the weight gradient.
    Saved for backward: ``x`` and ``w`` only (see the module docstring).
    """

    @staticmethod
    def forward(ctx, x, w, eta, p=1.0):
        ctx.save_for_backward(x, w)
        ctx.eta = eta
        return -_l1_blocked(x, w, p)

    @staticmethod
    def backward(ctx, grad_y):
        x, w = ctx.saved_tensors
        grad_x = grad_w = None
        batched = x.dim() == 3
        if ctx.needs_input_grad[1]:
            # sum_m g[m, o] * (x[m, k] - w[o, k]), as two matrix products.
            if batched:
                grad_w = grad_y.transpose(1, 2) @ x - w * grad_y.sum(dim=1)[:, :, None]
            else:
                grad_w = grad_y.t() @ x - w * grad_y.sum(dim=0)[:, None]
            if ctx.eta is not None:
                # One norm over the whole weight tensor (all batch entries): one step size per layer.
                norm = torch.linalg.vector_norm(grad_w)
                grad_w = grad_w * (ctx.eta * math.sqrt(w.numel()) / norm.clamp_min(1e-12))
        if ctx.needs_input_grad[0]:
            grad_x = torch.zeros_like(x)
            o_total, k = w.shape[-2:]
            m_total = x.shape[-2] * (x.shape[0] if batched else 1)
            step = max(1, _BLOCK_ELEMENTS // max(1, m_total * k))
            for start in range(0, o_total, step):
                if batched:
                    wb = w[:, start:start + step]                                    # (B, ob, K)
                    ht = (wb[:, None, :, :] - x[:, :, None, :]).clamp_(-1.0, 1.0)    # (B, M, ob, K)
                    grad_x += torch.einsum("bmo,bmok->bmk", grad_y[:, :, start:start + step], ht)
                else:
                    wb = w[start:start + step]                                     # (ob, K)
                    ht = (wb[None, :, :] - x[:, None, :]).clamp_(-1.0, 1.0)        # (M, ob, K)
                    grad_x += torch.einsum("mo,mok->mk", grad_y[:, start:start + step], ht)
        return grad_x, grad_w, None, None


def _l1_blocked(x: torch.Tensor, w: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    """``sum_k |x[m, k] - w[o, k]|**p`` as an ``(M, O)`` tensor, or ``(B, M, O)`` for batched inputs."""
    if x.dim() == 3:
        if x.shape[1] == 0:
            return x.new_zeros((x.shape[0], 0, w.shape[1]))
        if p == 1.0:
            return torch.cdist(x, w, p=1.0)
        # cdist gives (sum |d|**p)**(1/p); the l2-to-l1 schedule wants the sum itself.
        return (x[:, :, None, :] - w[:, None, :, :]).abs_().pow_(p).sum(dim=3)
    if x.shape[0] == 0:
        return x.new_zeros((0, w.shape[0]))
    if p != 1.0:
        return _l1_blocked(x[None], w[None], p)[0]
    return torch.cdist(x[None], w[None], p=1.0)[0]


def adder_l1(x: torch.Tensor, w: torch.Tensor, eta: float | None = None, p: float = 1.0) -> torch.Tensor:
    """Functional form: ``-sum_k |x[m, k] - w[o, k]|`` with AdderNet's gradients.

    Batched form: ``x (B, M, K)``, ``w (B, O, K)`` → ``(B, M, O)``, ``B`` independent problems
    sharing one adaptive learning rate (the norm is over all of ``w``).  ``p`` (default 1) raises
    each difference to the power ``p`` in the forward only (``sum_k |x - w|**p``, used by the
    l2-to-l1 schedule of :mod:`hwgen.nn.winograd`); the backward is AdderNet's surrogate for any
    ``p``: full-precision ``x - w`` for the weight, ``HT(w - x)`` for the input (which is the
    clipped gradient of the l2 form, so it fits ``p = 2`` as well, up to the factor 2 that the
    adaptive learning rate normalises away for the weight).
    """
    return AdderFunction.apply(x, w, eta, float(p))


def adder_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                 eta: float | None = None) -> torch.Tensor:
    """Functional :class:`AdderConv2d`: ``x (N, C, H, W)``, ``weight (O, C, KH, KW)``."""
    n, _, h, w_ = x.shape
    o, _, kh, kw = weight.shape
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (w_ + 2 * padding - kw) // stride + 1
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)        # (N, C*KH*KW, L)
    cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])              # (N*L, C*KH*KW)
    y = adder_l1(cols, weight.reshape(o, -1), eta)                      # (N*L, O)
    # Contiguous, as a convolution's output is (so that a model's x.view(x.size(0), -1) works).
    return y.reshape(n, oh * ow, o).transpose(1, 2).reshape(n, o, oh, ow).contiguous()


class _AdderBase(nn.Module):
    def __init__(self, weight_shape, eta):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(weight_shape))
        self.eta = eta
        # As the paper: initialised like a convolution (He normal on the fan-in).
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity="relu")

    def extra_repr(self):
        return super().extra_repr() + f", eta={self.eta}"


class AdderConv2d(_AdderBase):
    """AdderNet 2-D convolution, no bias (a BatchNorm follows).

    ``y[n, o, i, j] = -sum_{c, ky, kx} |xpad[n, c, i*s+ky, j*s+kx] - w[o, c, ky, kx]|`` where
    ``xpad`` is ``x`` zero-padded by ``padding``: a padded position contributes ``|0 - w|``.
    Input ``(N, C, H, W)``, output ``(N, O, OH, OW)``, float32.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, eta: float | None = DEFAULT_ETA):
        for name, v, lo in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                            ("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0)):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"AdderConv2d: {name} must be an integer >= {lo}, got {v!r}")
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), eta)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        if torch.compiler.is_exporting():  # one node for torch.export (see hwgen.nn.ops)
            return torch.ops.hwgen.adder_conv2d(x, self.weight, self.stride, self.padding, self.eta)
        return adder_conv2d(x, self.weight, self.stride, self.padding, self.eta)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, eta={self.eta}")


class AdderLinear(_AdderBase):
    """AdderNet fully connected layer, no bias: ``y[n, o] = -sum_k |x[n, k] - w[o, k]|``."""

    def __init__(self, in_features: int, out_features: int, eta: float | None = DEFAULT_ETA):
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"AdderLinear: {name} must be a positive integer, got {v!r}")
        super().__init__((out_features, in_features), eta)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x):
        if torch.compiler.is_exporting():
            return torch.ops.hwgen.adder_linear(x, self.weight, self.eta)
        return adder_l1(x, self.weight, self.eta)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, eta={self.eta}"
