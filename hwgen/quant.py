"""The quantizer: a trained PyTorch model (:mod:`hwgen.nn`) → an integer model (:mod:`hwgen.ir`).

Supported module sequences (a flat or nested :class:`torch.nn.Sequential`):

* a weight layer optionally followed by ``BatchNorm2d | BatchNorm1d`` and ``ReLU``: the weight
  layer plus one :class:`hwgen.ir.Requant` (BatchNorm folded, ReLU fused).  Weight layers:

  - ``AdderConv2d | AdderLinear`` (AdderNet) → ``ir.AdderConv2d | ir.AdderDense``;
  - ``ShiftConv2d | ShiftLinear`` (DeepShift, both forms) → ``ir.ShiftConv2d | ir.ShiftDense``;
  - ``WinogradAdderConv2d`` (Winograd-AdderNet, :mod:`hwgen.nn.winograd`, at ``p = 1``) →
    ``ir.WinogradAdderConv2d``;
  - ``nn.Conv2d | nn.Linear`` (the multiplier baseline; a bias is folded into the requantizer's
    bias; no groups or dilation) → ``ir.Conv2d | ir.Dense``;

* ``MaxPool2d`` (square kernel, stride and padding; floor mode), ``Flatten``: mapped 1:1;
* ``AvgPool2d`` (square, floor mode) and ``AdaptiveAvgPool2d(1)`` (global average pooling):
  ``ir.SumPool2d`` / ``ir.GlobalSumPool2d``, the sum without the divider ``d`` (``size²``,
  ``divisor_override`` or ``H·W``): the sum's codes have ``1/d`` of the activations' scale,
  which the next weight layer's input scale (and so its requantizer) takes, so the hardware
  needs no divider.  The activations before the pools are calibrated, and the requantizer
  before them outputs at ``d`` times the next layer's input scale;
* ``ReLU6`` and ``Hardtanh`` after a weight layer: clamps, the requantizer's ``clamp_lo`` /
  ``clamp_hi`` at the codes of their bounds (``Hardtanh`` with a negative bound: signed);
* ``Identity`` and ``Dropout`` (no-ops at inference) are dropped.

Two weight layers may follow each other directly (ShiftAddNet's shift → adder pair): the first
then gets a requantizer of its own with neither BatchNorm nor ReLU.

Names: conv-type layers are ``conv0, conv1, …``, dense-type ``dense0, …``, requantizers
``requant0, …``, then ``pool0, …`` and ``flatten0``, numbered in order of appearance.

Scales.  Every activation tensor is ``act_bits`` wide with one real scale ``s`` (the value of
one LSB): unsigned ``[0, 2**act_bits - 1]`` after a ReLU (and the input image), signed
``[-2**(act_bits-1), 2**(act_bits-1) - 1]`` after a requantizer without ReLU that is not the
last (the shift layer of a shift-add block).  ``a`` is the calibrated maximum of the float
tensor (its absolute value when signed; a ``percentile`` of the calibration images, the
maximum by default) and ``top`` the largest code, ``2**act_bits - 1`` or ``2**(act_bits-1) - 1``.

* Shift and multiplier layers take ``s = a / top``.
* An adder layer needs its input and its weights on the *same* scale (the l1 distance subtracts
  them), so the scale of a tensor that feeds it is

      s = max(a / top, w_max / (2**(weight_bits - 1) - 1))

  with ``w_max`` the largest weight that matters (``max(w)`` for unsigned inputs, ``max |w|``
  for signed ones, at most ``a``: weights beyond the activations are clipped, as few
  activations reach them).  Clipping a weight outside the integer range ``[w_lo, w_hi]``
  changes ``|x - w|`` by a constant while ``x`` stays on the same side of it, and the
  difference is a per-channel constant (``meta["adder_offsets"]``) folded into the
  requantizer's bias.  Unsigned inputs: weights below ``w_lo`` are always exact (``x >= 0``),
  weights above ``w_hi`` for every ``x <= w_hi`` (all calibrated activations when the weights
  set the scale).  Signed inputs: clipping is exact for *every* input when
  ``weight_bits >= act_bits`` (the input codes ``[-2**(act_bits-1), 2**(act_bits-1) - 1]`` lie
  inside ``[w_lo, w_hi]``), else for every input inside ``[w_lo, w_hi]``, which includes all
  calibrated activations whenever the weights set the scale.

Winograd-adder layers take ``s = a / top`` (no weight term): the transformed kernel ``U`` is put
on the scale of ``V = Bᵀ d B``, ``s / kb²`` (``kb = 2`` when ``Bᵀ`` has a ``½`` entry, stored
doubled, else 1), and is *not* clipped (``weight_bits`` does not apply; see
``_winograd_weights`` for why clipping is not exact here), so the integer layer computes
exactly the float one up to the rounding of ``U`` and of the input.  One accumulator LSB is
``s / (kb² ka²)`` (``ka = 2`` when ``Aᵀ`` has a ``½`` entry).

Integer weights.  Adder: ``round(w / s)`` clipped to ``weight_bits``.  Shift: ``sign << (p - pmin)``
from the layer's :meth:`~hwgen.nn.shift.ShiftConv2d.exported` ``(sign, p)``, ``max_shift = pmax - pmin``,
and ``2**pmin`` goes into the accumulator's scale: ``acc_real = acc_int * s_in * 2**pmin`` (the
weights are exact: no weight error at all).  Multiplier: symmetric ``weight_bits`` integers
``round(w / ws_c)`` in ``[-(2**(weight_bits-1) - 1), 2**(weight_bits-1) - 1]`` with one scale
``ws_c = max |w_c| / (2**(weight_bits-1) - 1)`` per output channel (``mac_per_channel=True``) or per
layer; ``acc_real = acc_int * s_in * ws_c``.

Requantization.  ``acc_real = acc_int * s_acc`` (``s_acc`` as above, per channel for a multiplier
layer).  BatchNorm is ``z = A_c * acc_real + B_c`` and the output ``y = z / s_out`` is computed as
``clamp((acc * mult_c + bias_c) >> shift, ...)``: ``shift`` is per layer and makes the largest
``|mult|`` about ``mult_bits`` bits wide, then each ``mult_c`` is rounded to the nearest integer
with at most ``requant_terms`` canonical-signed-digit terms, and ``bias_c`` holds ``B_c / s_out``
rescaled by the rounded multiplier (so a channel's error is a pure scale error) plus the
round-to-nearest term ``1 << (shift - 1)``.  ``s_out`` is the scale of the next weight layer's
input.  The last weight layer's requantizer is signed, ``score_bits`` wide, with its scale set so
the largest calibrated score uses about 3/4 of the range.

``meta`` records ``layer_scales`` (the real value of one LSB of every layer's output; for a
multiplier layer times ``meta["channel_scales"][name][c]``), ``adder_offsets`` and, given test
images, ``float_accuracy`` and ``integer_accuracy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import golden, ir
from .ir import csd_round
from .nn.adder import AdderConv2d, AdderLinear
from .nn.shift import ShiftConv2d, ShiftLinear
from .nn.winograd import WinogradAdderConv2d

__all__ = ["quantize", "quantize_input", "float_reference", "csd_round"]


# --------------------------------------------------------------------------- helpers

_ADDER = (AdderConv2d, AdderLinear)
_SHIFT = (ShiftConv2d, ShiftLinear)
_MAC = (nn.Conv2d, nn.Linear)
_WINOGRAD = (WinogradAdderConv2d,)
_WEIGHT = _ADDER + _SHIFT + _MAC + _WINOGRAD
_CONV = (AdderConv2d, ShiftConv2d, nn.Conv2d, WinogradAdderConv2d)  # 4-D weight layers, followed by BatchNorm2d


@dataclass
class _Stage:
    """One unit of the integer model, in order."""

    kind: str                       # "weight", "pool", "flatten"
    module: nn.Module | None = None
    bn: nn.Module | None = None
    relu: bool = False
    pool: int = 0
    act: nn.Module | None = None        # ReLU, ReLU6 or Hardtanh after the weight layer
    clip: tuple[float, float] | None = None  # ReLU6 / Hardtanh bounds: the requantizer's clamp
    divisor: int = 1                    # average pool: the sum's divider (global: set by the trace)

    @property
    def arithmetic(self) -> str:
        """``"adder"``, ``"shift"``, ``"winograd"`` or ``"mac"`` for a weight stage."""
        m = self.module
        if isinstance(m, _WINOGRAD):
            return "winograd"
        return "adder" if isinstance(m, _ADDER) else "shift" if isinstance(m, _SHIFT) else "mac"


_SKIP = (nn.Identity, nn.Dropout)


def _leaves(model: nn.Module, prefix=""):
    if isinstance(model, nn.Sequential):
        for name, child in model.named_children():
            yield from _leaves(child, f"{prefix}{name}.")
    else:
        yield prefix.rstrip(".") or type(model).__name__, model


def _unsupported(name, module, why=""):
    supported = ("AdderConv2d, AdderLinear, ShiftConv2d, ShiftLinear, WinogradAdderConv2d, Conv2d, Linear, "
                 "BatchNorm1d/2d, ReLU, ReLU6, Hardtanh, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, "
                 "Dropout, Identity")
    raise ir.ModelError(f"quantize: module {name!r} of type {type(module).__name__} is not supported"
                        f"{why} (supported: {supported})")


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _check_conv(name, m: nn.Conv2d):
    """An ``nn.Conv2d`` the integer conv can express: square stride and padding, no groups or dilation."""
    stride, padding = _pair(m.stride), m.padding
    if (isinstance(padding, str) or _pair(padding)[0] != _pair(padding)[1] or stride[0] != stride[1]
            or _pair(m.dilation) != (1, 1) or m.groups != 1 or m.padding_mode != "zeros"):
        _unsupported(name, m, " with these options: only equal stride and padding in both dimensions, "
                              "zero padding, no dilation, groups=1")


def _conv_geometry(m) -> tuple[int, int]:
    """``(stride, padding)`` of a conv-type module as ints."""
    return int(_pair(m.stride)[0]), int(_pair(m.padding)[0])


def _parse(model: nn.Module) -> list[_Stage]:
    stages: list[_Stage] = []
    leaves = [(n, m) for n, m in _leaves(model) if not isinstance(m, _SKIP)]
    for name, m in leaves:
        last = stages[-1] if stages else None
        if isinstance(m, _WEIGHT):
            if isinstance(m, nn.Conv2d):
                _check_conv(name, m)
            if isinstance(m, _WINOGRAD) and m.p != 1.0:
                _unsupported(name, m, f" with p = {m.p}: the integer model is l1 (p = 1); finish the "
                                      f"l2-to-l1 schedule (it ends at p = 1)")
            if isinstance(m, _WINOGRAD) and _pair(getattr(m, "stride", 1)) != (1, 1):
                # The one refusal of a strided Winograd layer: the IR node has no stride.
                _unsupported(name, m, f" with stride {m.stride}: the Winograd F(2×2, 3×3) engine "
                                      f"computes stride 1 only; use an AdderConv2d for stride 2")
            stages.append(_Stage("weight", module=m))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            want = nn.BatchNorm2d if (last and isinstance(last.module, _CONV)) else nn.BatchNorm1d
            if last is None or last.kind != "weight" or last.bn is not None or last.relu or not isinstance(m, want):
                _unsupported(name, m, " here: a BatchNorm must directly follow a weight layer of matching rank")
            if not m.track_running_stats or m.running_mean is None:
                _unsupported(name, m, " without running statistics")
            last.bn = m
        elif isinstance(m, (nn.ReLU, nn.Hardtanh)):  # nn.ReLU6 is a Hardtanh
            if last is None or last.kind != "weight" or last.act is not None:
                _unsupported(name, m, f" here: a {type(m).__name__} must follow a weight layer or its "
                                      f"BatchNorm")
            last.act = m
            if isinstance(m, nn.Hardtanh):
                if not m.min_val < m.max_val:
                    _unsupported(name, m, f" with min_val {m.min_val} >= max_val {m.max_val}")
                last.clip = (float(m.min_val), float(m.max_val))
            last.relu = last.clip is None or last.clip[0] >= 0
        elif isinstance(m, nn.AvgPool2d):
            k, s = m.kernel_size, m.stride if m.stride is not None else m.kernel_size
            if (len(set(_pair(k))) != 1 or len(set(_pair(s))) != 1 or len(set(_pair(m.padding))) != 1
                    or m.ceil_mode or (_pair(m.padding)[0] and not m.count_include_pad)):
                _unsupported(name, m, " with these options: only a square kernel, stride and padding, "
                                      "floor mode, count_include_pad with padding")
            k = int(_pair(k)[0])
            stages.append(_Stage("pool", module=m, pool=k, divisor=int(m.divisor_override or k * k)))
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            if _pair(m.output_size) != (1, 1):
                _unsupported(name, m, f" with output_size {m.output_size}: only 1 (global average "
                                      f"pooling)")
            stages.append(_Stage("pool", module=m, divisor=0))
        elif isinstance(m, nn.MaxPool2d):
            k, s = m.kernel_size, m.stride if m.stride is not None else m.kernel_size
            if (len(set(_pair(k))) != 1 or len(set(_pair(s))) != 1 or len(set(_pair(m.padding))) != 1
                    or _pair(m.dilation) != (1, 1) or m.ceil_mode):
                _unsupported(name, m, " with these options: only a square kernel, stride and padding, "
                                      "no dilation, floor mode")
            stages.append(_Stage("pool", module=m, pool=int(_pair(k)[0])))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                _unsupported(name, m, " with start_dim/end_dim other than 1/-1")
            stages.append(_Stage("flatten"))
        else:
            _unsupported(name, m)
    if not stages or not any(s.kind == "weight" for s in stages):
        raise ir.ModelError("quantize: the model has no weight layer (adder, shift, conv or linear)")
    return stages


@torch.no_grad()
def _trace(stages: list[_Stage], x: torch.Tensor) -> list[dict]:
    """Float tensors of every stage: input, the weight layer's raw output (without a bias), the output."""
    out = []
    for st in stages:
        rec = {"in": x}
        if st.kind == "weight":
            a = st.module(x)
            bias = getattr(st.module, "bias", None) if isinstance(st.module, _MAC) else None
            rec["acc"] = a if bias is None else a - bias.reshape((1, -1) + (1,) * (a.dim() - 2))
            if st.bn is not None:
                a = st.bn(a)
            if st.act is not None:
                a = st.act(a)
            x = a
        elif st.kind == "pool":
            if isinstance(st.module, nn.AdaptiveAvgPool2d):
                st.divisor = int(x.shape[2] * x.shape[3])
            x = st.module(x)
        else:
            x = x.flatten(1)
        rec["out"] = x
        out.append(rec)
    return out


def _calib_max(t: torch.Tensor, percentile: float) -> float:
    v = t.detach().double().flatten()
    if v.numel() == 0:
        return 0.0
    if percentile >= 100:
        return float(v.max())
    return float(np.percentile(v.numpy(), percentile))


def _bn_affine(st: _Stage, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A_c, B_c)`` of ``z = A_c * acc + B_c``: BatchNorm folded, with a multiplier layer's bias."""
    bias = getattr(st.module, "bias", None) if isinstance(st.module, _MAC) else None
    bias = np.zeros(channels) if bias is None else bias.detach().double().numpy()
    if st.bn is None:
        return np.ones(channels), bias
    bn = st.bn
    var = bn.running_var.double().numpy()
    gamma = bn.weight.detach().double().numpy() if bn.affine else np.ones(channels)
    beta = bn.bias.detach().double().numpy() if bn.affine else np.zeros(channels)
    a = gamma / np.sqrt(var + bn.eps)
    return a, beta + a * (bias - bn.running_mean.double().numpy())


def _input_scale(st: _Stage, a: float, signed: bool, act_bits: int, weight_bits: int,
                 divisor: int = 1) -> float:
    """Scale of the tensor feeding weight stage ``st`` (see the module docstring); after average
    pools, the scale of their sum of ``divisor`` activation codes."""
    top = (1 << (act_bits - 1)) - 1 if signed else (1 << act_bits) - 1
    s = a / (top * divisor)
    if st.arithmetic == "adder":
        w = st.module.weight.detach().double().numpy()
        w_top = float(np.abs(w).max()) if signed else float(w.max())
        w_max = max(0.0, min(w_top, a))
        s = max(s, w_max / ((1 << (weight_bits - 1)) - 1))
    return s


def _adder_weights(module, s_in: float, weight_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer adder weights on the input's scale, clipped, and the per-channel clipping offset."""
    w_lim = (1 << (weight_bits - 1)) - 1
    w_lo = -(1 << (weight_bits - 1))
    w = module.weight.detach().double().numpy()
    wq = np.round(w / s_in).astype(np.int64)
    # Clipping a weight changes |x - w| by a constant while x stays on the same side of it (see the
    # module docstring): acc_int = acc_true + offset, removed in the requantizer.
    clipped = np.clip(wq, w_lo, w_lim)
    offset = np.abs(wq - clipped).reshape(len(wq), -1).sum(axis=1)
    return clipped, offset


def _winograd_weights(module, s_in: float):
    """Integer Winograd layer parts: ``(u, bt, at, acc_scale_factor)``.

    ``bt``/``at`` are the float ``Bᵀ``/``Aᵀ`` times ``kb``/``ka`` (2 if the matrix has a ``½``
    entry, else 1), so ``V_int = bt d_int btᵀ`` is ``V / (s_in / kb²)`` and ``u = round(U kb² / s_in)``
    is on the same scale (the adder rule).  ``u`` is not clipped: its width is its own (the ranges
    of :class:`hwgen.ir.WinogradAdderConv2d` follow it).  Clipping, as the direct adder layers do,
    is not exact here: a clipped entry changes ``|u - V|`` by a constant (``V`` stays on one side),
    but ``at · atᵀ`` turns the constants of the 16 lanes into a different constant for each of the
    four positions of an output tile, while the requantizer's bias is one per channel.  And trained
    ``U`` goes far beyond the range of ``V`` (on digits, a quarter of the first layer's entries lie
    outside their lane's range, down to about 9 × the input's full scale: such a lane is the linear
    function ``V - U`` of its input), so clipping to ``V``'s width costs accuracy (measured: 94.7 %
    integer against 98.1 % float) where keeping ``u`` exact costs about three bits of lane width.
    One accumulator LSB is worth ``s_in / (kb² ka²)``.
    """
    bt_f = module.bt.double().numpy()
    at_f = module.at.double().numpy()
    kb = 2 if np.any(np.abs(bt_f) == 0.5) else 1
    ka = 2 if np.any(np.abs(at_f) == 0.5) else 1
    bt = np.round(bt_f * kb).astype(np.int64)
    at = np.round(at_f * ka).astype(np.int64)
    u = np.round(module.weight.detach().double().numpy() * kb * kb / s_in)
    if np.abs(u).max(initial=0) >= 2.0 ** 40:
        raise ir.ModelError(f"quantize: Winograd weights of {np.abs(u).max():.3g} input LSBs "
                            f"do not fit an integer lane")
    return u.astype(np.int64), bt, at, 1.0 / (kb * kb * ka * ka)


def _shift_weights(name: str, module) -> tuple[np.ndarray, np.ndarray, int]:
    """``(sign, shift, max_shift)`` of a shift layer: the integer weight ``sign << (p - pmin)``."""
    sign, p = module.exported()
    max_shift = module.pmax - module.pmin
    if max_shift > 30:
        raise ir.ModelError(f"quantize: shift layer {name!r} has prange ({module.pmin}, {module.pmax}), "
                            f"{max_shift} shifts wide; the integer model allows at most 30")
    return sign, (p - module.pmin).astype(np.int64), int(max_shift)


def _mac_weights(module, weight_bits: int, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric integer weights and the weight scale of every output channel."""
    w_lim = (1 << (weight_bits - 1)) - 1
    w = module.weight.detach().double().numpy()
    flat = np.abs(w).reshape(len(w), -1)
    peak = flat.max(axis=1) if per_channel else np.full(len(w), flat.max())
    ws = np.where(peak > 0, peak / w_lim, 1.0)
    wq = np.clip(np.round(w / ws.reshape((-1,) + (1,) * (w.ndim - 1))), -w_lim, w_lim).astype(np.int64)
    return wq, ws


def _pool_layer(name: str, st: _Stage, in_shape) -> ir.Layer:
    """The integer layer of a pool stage: a max pool, or an average pool's sum (its divider goes
    into the scale)."""
    m = st.module
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return ir.GlobalSumPool2d(name=name, height=int(in_shape[2]), width=int(in_shape[3]))
    stride = int(_pair(m.stride if m.stride is not None else m.kernel_size)[0])
    cls = ir.MaxPool2d if isinstance(m, nn.MaxPool2d) else ir.SumPool2d
    return cls(name=name, size=st.pool, stride=stride, padding=int(_pair(m.padding)[0]))


def _clamp_codes(clip, s_out: float, out_bits: int, relu: bool) -> dict:
    """``clamp_lo`` / ``clamp_hi`` of a requantizer for the bounds of a ReLU6 or Hardtanh: the
    codes of the bounds, where they lie inside the ``out_bits`` range (round then clamp is
    clamp then round at a bound's code)."""
    if clip is None:
        return {}
    lo, hi = (0, (1 << out_bits) - 1) if relu else (-(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1)
    out = {}
    c_lo, c_hi = int(round(clip[0] / s_out)), int(round(clip[1] / s_out))
    if c_lo > lo:
        out["clamp_lo"] = min(c_lo, hi)
    if c_hi < hi:
        out["clamp_hi"] = max(c_hi, lo)
    return out


# --------------------------------------------------------------------------- public API

def quantize(model: nn.Module, x_calib: np.ndarray, act_bits: int = 8, weight_bits: int = 8,
             requant_terms: int = 3, name: str = "digits-adder", classes=None, *,
             x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
             percentile: float = 100.0, score_bits: int = 16, mult_bits: int = 12,
             mac_per_channel: bool = True) -> ir.Model:
    """Quantize ``model`` (float, eval mode is set) to an :class:`hwgen.ir.Model`.

    ``x_calib``: float images ``(N, C, H, W)``, non-negative (the training images).  With
    ``x_test``/``y_test`` the float and integer test accuracies go into ``meta``.
    ``weight_bits`` applies to adder and multiplier weights (shift weights are exact);
    ``mac_per_channel`` picks one weight scale per output channel (else per layer) for
    multiplier layers.  Raises :class:`hwgen.ir.ModelError` for a module it cannot map.
    """
    for label, v, lo, hi in (("act_bits", act_bits, 2, 16), ("weight_bits", weight_bits, 2, 16),
                             ("requant_terms", requant_terms, 1, 16), ("score_bits", score_bits, 2, 32),
                             ("mult_bits", mult_bits, 2, 30)):
        if not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"quantize: {label} must be an integer in [{lo}, {hi}], got {v!r}")
    if not 50 <= percentile <= 100:
        raise ValueError(f"quantize: percentile must be in [50, 100], got {percentile}")
    x_calib = np.array(x_calib, dtype=np.float32)  # a copy: torch wants a writable array
    if x_calib.ndim != 4 or len(x_calib) == 0:
        raise ValueError(f"quantize: x_calib must be a non-empty (N, C, H, W) array, got shape {x_calib.shape}")
    if x_calib.min() < 0:
        raise ValueError("quantize: x_calib has negative values; the integer input is unsigned")

    model.eval()
    stages = _parse(model)
    trace = _trace(stages, torch.from_numpy(x_calib))
    weights = [i for i, st in enumerate(stages) if st.kind == "weight"]

    # Scale of every tensor that feeds a weight layer.  Its input is signed when the weight layer
    # before it has no ReLU (the image, before the first, is unsigned).
    in_scale: dict[int, float] = {}
    signed_in: dict[int, bool] = {}
    divisors: dict[int, int] = {}
    for k, i in enumerate(weights):
        signed = k > 0 and not stages[weights[k - 1]].relu
        before = weights[k - 1] + 1 if k else 0
        divisors[i] = int(np.prod([st.divisor for st in stages[before:i]]))  # 1 but for avg pools
        # After average pools, the activations are those before them: their sum is what the
        # layer takes, at 1/divisor of their scale.
        x_in = trace[i]["in"] if divisors[i] == 1 else trace[before]["in"]
        a = _calib_max(x_in.abs() if signed else x_in, percentile)
        s = _input_scale(stages[i], a, signed, act_bits, weight_bits, divisors[i])
        if s <= 0:
            raise ir.ModelError(f"quantize: the input of weight layer {k} ({type(stages[i].module).__name__}) "
                                f"is all zero on the calibration images")
        in_scale[i], signed_in[i] = s, signed

    # The scale flowing through the stages: the input's, then each requantizer's.
    first = weights[0]
    scale = in_scale[first] * divisors[first]
    layers: list[ir.Layer] = []
    scales: list[float] = []
    csd_err: dict[str, float] = {}
    offsets: dict[str, list[int]] = {}
    channel_scales: dict[str, list[float]] = {}
    counters = {"conv": 0, "dense": 0, "requant": 0, "pool": 0, "flatten": 0}

    def new_name(kind):
        n = f"{kind}{counters[kind]}"
        counters[kind] += 1
        return n

    for i, st in enumerate(stages):
        if st.kind == "pool":
            layers.append(_pool_layer(new_name("pool"), st, trace[i]["in"].shape))
            scale /= st.divisor
            scales.append(scale)
            continue
        if st.kind == "flatten":
            layers.append(ir.Flatten(name=new_name("flatten")))
            scales.append(scale)
            continue
        # ---- weight layer: integer weights and the real value of one accumulator LSB (per channel)
        s_in = in_scale[i]
        if not math.isclose(s_in, scale, rel_tol=1e-12):
            raise AssertionError(f"scale mismatch at stage {i}")  # the scale plan is one chain
        m = st.module
        is_conv = isinstance(m, _CONV)
        lname = new_name("conv" if is_conv else "dense")
        geometry = (dict(zip(("stride", "padding"), _conv_geometry(m)))
                    if is_conv and not isinstance(m, _WINOGRAD) else {})
        if st.arithmetic == "winograd":
            uq, bt, at, factor = _winograd_weights(m, s_in)
            layer = ir.WinogradAdderConv2d(name=lname, u=uq, bt=bt, at=at, padding=m.padding)
            acc_scale = np.full(len(uq), s_in * factor)
            offset = np.zeros(len(uq), dtype=np.int64)
            offsets[lname] = [0] * len(uq)
            scales.append(s_in * factor)
        elif st.arithmetic == "adder":
            wq, offset = _adder_weights(m, s_in, weight_bits)
            layer = (ir.AdderConv2d if is_conv else ir.AdderDense)(name=lname, weight=wq, **geometry)
            acc_scale = np.full(len(wq), s_in)
            offsets[lname] = [int(v) for v in offset]
            scales.append(s_in)
        elif st.arithmetic == "shift":
            sign, shift, max_shift = _shift_weights(lname, m)
            layer = (ir.ShiftConv2d if is_conv else ir.ShiftDense)(name=lname, sign=sign, shift=shift,
                                                                    max_shift=max_shift, **geometry)
            acc_scale = np.full(len(sign), s_in * 2.0 ** m.pmin)
            offset = np.zeros(len(sign), dtype=np.int64)
            scales.append(s_in * 2.0 ** m.pmin)
        else:
            wq, ws = _mac_weights(m, weight_bits, mac_per_channel)
            layer = (ir.Conv2d if is_conv else ir.Dense)(name=lname, weight=wq, **geometry)
            acc_scale = s_in * ws
            offset = np.zeros(len(wq), dtype=np.int64)
            channel_scales[lname] = [float(v) for v in ws]
            scales.append(s_in)
        layers.append(layer)

        # ---- requantizer: BatchNorm folded, ReLU fused
        channels = len(acc_scale)
        a_c, b_c = _bn_affine(st, channels)
        last = i == weights[-1]
        relu = st.relu
        if last:
            out_bits = score_bits
            top = (1 << out_bits) - 1 if relu else (1 << (out_bits - 1)) - 1
            s_out = max(_calib_max(trace[i]["out"].abs(), 100.0), 1e-12) / (0.75 * top)
        else:
            out_bits = act_bits
            nxt = next(j for j in weights if j > i)
            assert signed_in[nxt] == (not relu)
            s_out = in_scale[nxt] * divisors[nxt]
        ratio = a_c * acc_scale / s_out
        r_max = float(np.abs(ratio).max())
        shift = 1 if r_max == 0 else mult_bits - 1 - math.floor(math.log2(r_max))
        shift = int(min(62, max(1, shift)))
        mult_exact = ratio * 2.0 ** shift
        mult = np.array([csd_round(int(round(v)), requant_terms) for v in mult_exact], dtype=np.int64)
        # Rescale the BatchNorm bias by the rounded multiplier: the channel's error is then a pure scale.
        gain = np.where(mult_exact != 0, mult / np.where(mult_exact != 0, mult_exact, 1.0), 1.0)
        bias = (np.round(b_c / s_out * gain * 2.0 ** shift).astype(np.int64)
                - mult * offset + (1 << (shift - 1)))
        rq_name = new_name("requant")
        nz = np.abs(mult_exact) > 0
        csd_err[rq_name] = float(np.max(np.abs(gain[nz] - 1.0))) if nz.any() else 0.0
        layers.append(ir.Requant(name=rq_name, mult=mult, bias=bias, shift=shift, out_bits=out_bits,
                                 relu=relu, scale=float(s_out), max_terms=requant_terms,
                                 **_clamp_codes(st.clip, s_out, out_bits, relu)))
        scales.append(float(s_out))
        scale = s_out

    c, h, w = x_calib.shape[1:]
    meta = {
        "quantizer": "hwgen.quant",
        "act_bits": act_bits, "weight_bits": weight_bits, "requant_terms": requant_terms,
        "percentile": percentile, "score_bits": score_bits,
        "layer_scales": [float(s) for s in scales],
        "requant_max_scale_error": csd_err,
        "adder_offsets": offsets,
        "calibration_images": int(len(x_calib)),
    }
    if channel_scales:
        meta["channel_scales"] = channel_scales
    qmodel = ir.Model(name=name, input_shape=(c, h, w), input_bits=act_bits,
                      input_scale=float(in_scale[first] * divisors[first]), layers=layers,
                      classes=list(classes) if classes is not None else [], meta=meta)
    if x_test is not None and y_test is not None:
        with torch.no_grad():
            logits = model(torch.as_tensor(np.array(x_test, dtype=np.float32)))
        meta["float_accuracy"] = float((logits.argmax(1).numpy() == np.asarray(y_test)).mean())
        meta["integer_accuracy"] = golden.accuracy(qmodel, quantize_input(qmodel, x_test), y_test)
        meta["test_images"] = int(len(x_test))
    return qmodel


def quantize_input(model_ir: ir.Model, x_float: np.ndarray) -> np.ndarray:
    """Host-side input quantization: ``clip(round(x / input_scale), 0, 2**input_bits - 1)`` as int64."""
    x = np.asarray(x_float, dtype=np.float64)
    lo, hi = model_ir.input_range
    return np.clip(np.round(x / model_ir.input_scale), lo, hi).astype(np.int64)


def float_reference(model: nn.Module, x_float: np.ndarray) -> list[np.ndarray]:
    """Float tensors of ``model`` aligned with the layers :func:`quantize` makes from it.

    Entry ``i`` is the real-valued counterpart of integer layer ``i``; multiply the integer
    output by ``meta["layer_scales"][i]`` to compare.  For an adder layer (the raw l1 output)
    first subtract ``meta["adder_offsets"][name]`` per output channel (the clipped weights); for
    a multiplier layer also multiply channel ``c`` by ``meta["channel_scales"][name][c]`` (its
    entry is the weighted sum without the bias, which the requantizer adds).
    """
    model.eval()
    stages = _parse(model)
    out = []
    for st, rec in zip(stages, _trace(stages, torch.as_tensor(np.array(x_float, dtype=np.float32)))):
        if st.kind == "weight":
            out.append(rec["acc"].double().numpy())
        out.append(rec["out"].double().numpy())
    return out
