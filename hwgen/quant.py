"""The quantizer: a trained PyTorch model (:mod:`hwgen.nn`) → an integer model (:mod:`hwgen.ir`).

Supported module sequences (a flat or nested :class:`torch.nn.Sequential`):

* ``AdderConv2d | AdderLinear`` optionally followed by ``BatchNorm2d | BatchNorm1d`` and ``ReLU``:
  an adder layer plus one :class:`hwgen.ir.Requant` (BatchNorm folded, ReLU fused);
* ``MaxPool2d`` (kernel = stride, no padding), ``Flatten``: mapped 1:1;
* ``Identity`` and ``Dropout`` (no-ops at inference) are dropped.

Scales.  Every activation tensor is unsigned ``act_bits`` wide with one real scale ``s`` (the
value of one LSB).  An adder layer needs its input and its weights on the *same* scale (the
l1 distance subtracts them), so the scale of a tensor that feeds an adder layer is

    s = max(a / (2**act_bits - 1), w_max / (2**(weight_bits - 1) - 1))

with ``a`` the calibrated maximum of the float activation (a ``percentile`` of the
calibration images, the maximum by default) and ``w_max`` the largest weight that matters
(weights above ``a`` are clipped: few activations reach them).  Weights below the signed range
are clipped *exactly*: activations are never negative, so ``|x - w| = x - w`` there and the
difference is a per-channel constant folded into the requantizer's bias.

Requantization.  The adder layer gives ``acc = -sum |x_q - w_q|``, the real value ``acc * s_in``.
BatchNorm is ``z = A_c * acc * s_in + B_c`` and the output ``y = z / s_out`` is computed as
``clamp((acc * mult_c + bias_c) >> shift, ...)``: ``shift`` is per layer and makes the largest
``|mult|`` about ``mult_bits`` bits wide, then each ``mult_c`` is rounded to the nearest integer
with at most ``requant_terms`` canonical-signed-digit terms, and ``bias_c`` holds ``B_c / s_out``
rescaled by the rounded multiplier (so a channel's error is a pure scale error) plus the
round-to-nearest term ``1 << (shift - 1)``.  The last adder layer's requantizer is signed,
``score_bits`` wide, with its scale set so the largest calibrated score uses about 3/4 of the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import golden, ir
from .nn.adder import AdderConv2d, AdderLinear

__all__ = ["quantize", "quantize_input", "float_reference", "csd_round"]


# --------------------------------------------------------------------------- helpers

def csd_round(value: int, max_terms: int) -> int:
    """The integer nearest to ``value`` whose canonical signed-digit form has <= ``max_terms`` digits.

    Ties go to the smaller magnitude.  ``max_terms`` must be >= 1.
    """
    if max_terms < 1:
        raise ValueError(f"requant_terms must be >= 1, got {max_terms}")
    value = int(value)
    if len(ir.csd(value)) <= max_terms:
        return value
    sign = -1 if value < 0 else 1
    mag = abs(value)
    d = 1
    while True:
        for cand in (mag - d, mag + d):
            if cand >= 0 and len(ir.csd(cand)) <= max_terms:
                return sign * cand
        d += 1


@dataclass
class _Stage:
    """One unit of the integer model, in order."""

    kind: str                       # "adder", "pool", "flatten"
    module: nn.Module | None = None
    bn: nn.Module | None = None
    relu: bool = False
    pool: int = 0


_SKIP = (nn.Identity, nn.Dropout)


def _leaves(model: nn.Module, prefix=""):
    if isinstance(model, nn.Sequential):
        for name, child in model.named_children():
            yield from _leaves(child, f"{prefix}{name}.")
    else:
        yield prefix.rstrip(".") or type(model).__name__, model


def _unsupported(name, module, why=""):
    supported = "AdderConv2d, AdderLinear, BatchNorm1d/2d, ReLU, MaxPool2d, Flatten"
    raise ir.ModelError(f"quantize: module {name!r} of type {type(module).__name__} is not supported"
                        f"{why} (supported: {supported})")


def _parse(model: nn.Module) -> list[_Stage]:
    stages: list[_Stage] = []
    leaves = [(n, m) for n, m in _leaves(model) if not isinstance(m, _SKIP)]
    for name, m in leaves:
        last = stages[-1] if stages else None
        if isinstance(m, (AdderConv2d, AdderLinear)):
            stages.append(_Stage("adder", module=m))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            want = nn.BatchNorm2d if (last and isinstance(last.module, AdderConv2d)) else nn.BatchNorm1d
            if last is None or last.kind != "adder" or last.bn is not None or last.relu or not isinstance(m, want):
                _unsupported(name, m, " here: a BatchNorm must directly follow an adder layer of matching rank")
            if not m.track_running_stats or m.running_mean is None:
                _unsupported(name, m, " without running statistics")
            last.bn = m
        elif isinstance(m, nn.ReLU):
            if last is None or last.kind != "adder" or last.relu:
                _unsupported(name, m, " here: a ReLU must follow an adder layer or its BatchNorm")
            last.relu = True
        elif isinstance(m, nn.MaxPool2d):
            k, s = m.kernel_size, m.stride if m.stride is not None else m.kernel_size
            pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
            if (pair(k)[0] != pair(k)[1] or pair(s) != pair(k) or pair(m.padding) != (0, 0)
                    or pair(m.dilation) != (1, 1) or m.ceil_mode):
                _unsupported(name, m, " with these options: only square kernel = stride, no padding, floor mode")
            stages.append(_Stage("pool", pool=int(pair(k)[0])))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                _unsupported(name, m, " with start_dim/end_dim other than 1/-1")
            stages.append(_Stage("flatten"))
        else:
            _unsupported(name, m)
    if not stages or not any(s.kind == "adder" for s in stages):
        raise ir.ModelError("quantize: the model has no adder layer")
    return stages


@torch.no_grad()
def _trace(stages: list[_Stage], x: torch.Tensor) -> list[dict]:
    """Float tensors of every stage: input, the adder's raw output, and the stage output."""
    out = []
    for st in stages:
        rec = {"in": x}
        if st.kind == "adder":
            a = st.module(x)
            rec["acc"] = a
            if st.bn is not None:
                a = st.bn(a)
            if st.relu:
                a = torch.relu(a)
            x = a
        elif st.kind == "pool":
            x = nn.functional.max_pool2d(x, st.pool)
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
    if st.bn is None:
        return np.ones(channels), np.zeros(channels)
    bn = st.bn
    var = bn.running_var.double().numpy()
    gamma = bn.weight.detach().double().numpy() if bn.affine else np.ones(channels)
    beta = bn.bias.detach().double().numpy() if bn.affine else np.zeros(channels)
    a = gamma / np.sqrt(var + bn.eps)
    return a, beta - a * bn.running_mean.double().numpy()


# --------------------------------------------------------------------------- public API

def quantize(model: nn.Module, x_calib: np.ndarray, act_bits: int = 8, weight_bits: int = 8,
             requant_terms: int = 3, name: str = "digits-adder", classes=None, *,
             x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
             percentile: float = 100.0, score_bits: int = 16, mult_bits: int = 12) -> ir.Model:
    """Quantize ``model`` (float, eval mode is set) to an :class:`hwgen.ir.Model`.

    ``x_calib``: float images ``(N, C, H, W)``, non-negative (the training images).  With
    ``x_test``/``y_test`` the float and integer test accuracies go into ``meta``.
    Raises :class:`hwgen.ir.ModelError` for a module it cannot map.
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
    adders = [i for i, st in enumerate(stages) if st.kind == "adder"]
    for i in adders[:-1]:
        if not stages[i].relu:
            raise ir.ModelError(f"quantize: adder layer {i} is not followed by a ReLU; only the last "
                                f"adder layer may give signed outputs")
    act_max = (1 << act_bits) - 1
    w_lim = (1 << (weight_bits - 1)) - 1
    w_lo = -(1 << (weight_bits - 1))

    # Scale of every tensor that feeds an adder layer (its input scale = its weights' scale).
    in_scale: dict[int, float] = {}
    for i in adders:
        a = _calib_max(trace[i]["in"], percentile)
        w = stages[i].module.weight.detach().double().numpy()
        w_max = max(0.0, min(float(w.max()), a))
        s = max(a / act_max, w_max / w_lim)
        if s <= 0:
            raise ir.ModelError(f"quantize: the input of adder layer {i} is all zero on the calibration images")
        in_scale[i] = s

    # The scale flowing through the stages: the input's, then each requantizer's.
    first = adders[0]
    scale = in_scale[first]
    layers: list[ir.Layer] = []
    scales: list[float] = []
    csd_err: dict[str, float] = {}
    offsets: dict[str, list[int]] = {}
    counters = {"conv": 0, "dense": 0, "requant": 0, "pool": 0, "flatten": 0}

    def new_name(kind):
        n = f"{kind}{counters[kind]}"
        counters[kind] += 1
        return n

    for i, st in enumerate(stages):
        if st.kind == "pool":
            layers.append(ir.MaxPool2d(name=new_name("pool"), size=st.pool))
            scales.append(scale)
            continue
        if st.kind == "flatten":
            layers.append(ir.Flatten(name=new_name("flatten")))
            scales.append(scale)
            continue
        # ---- adder layer
        s_in = in_scale[i]
        if not math.isclose(s_in, scale, rel_tol=1e-12):
            raise AssertionError(f"scale mismatch at stage {i}")  # the scale plan is one chain
        w = st.module.weight.detach().double().numpy()
        wq = np.round(w / s_in).astype(np.int64)
        # Clipping a weight changes |x - w| by a constant while x stays on the same side of it:
        # always below (x >= 0), above for every x <= w_lim (all calibrated activations when the
        # weights set the scale).  acc_int = acc_true + offset, removed in the requantizer.
        clipped = np.clip(wq, w_lo, w_lim)
        offset = np.abs(wq - clipped).reshape(len(wq), -1).sum(axis=1)
        wq = clipped
        if isinstance(st.module, AdderConv2d):
            layers.append(ir.AdderConv2d(name=new_name("conv"), weight=wq, stride=st.module.stride,
                                         padding=st.module.padding))
        else:
            layers.append(ir.AdderDense(name=new_name("dense"), weight=wq))
        scales.append(s_in)
        offsets[layers[-1].name] = [int(v) for v in offset]

        # ---- requantizer: BatchNorm folded, ReLU fused
        channels = wq.shape[0]
        a_c, b_c = _bn_affine(st, channels)
        last = i == adders[-1]
        z = trace[i]["out"]
        if last:
            out_bits = score_bits
            relu = st.relu
            top = (1 << out_bits) - 1 if relu else (1 << (out_bits - 1)) - 1
            s_out = max(_calib_max(z.abs(), 100.0), 1e-12) / (0.75 * top)
        else:
            out_bits, relu = act_bits, True
            nxt = next(j for j in adders if j > i)
            s_out = in_scale[nxt]
        ratio = a_c * s_in / s_out
        r_max = float(np.abs(ratio).max())
        shift = 1 if r_max == 0 else mult_bits - 1 - math.floor(math.log2(r_max))
        shift = int(min(62, max(1, shift)))
        mult_exact = ratio * 2.0 ** shift
        mult = np.array([csd_round(int(round(m)), requant_terms) for m in mult_exact], dtype=np.int64)
        # Rescale the BatchNorm bias by the rounded multiplier: the channel's error is then a pure scale.
        gain = np.where(mult_exact != 0, mult / np.where(mult_exact != 0, mult_exact, 1.0), 1.0)
        bias = (np.round(b_c / s_out * gain * 2.0 ** shift).astype(np.int64)
                - mult * offset + (1 << (shift - 1)))
        rq_name = new_name("requant")
        nz = np.abs(mult_exact) > 0
        csd_err[rq_name] = float(np.max(np.abs(gain[nz] - 1.0))) if nz.any() else 0.0
        layers.append(ir.Requant(name=rq_name, mult=mult, bias=bias, shift=shift, out_bits=out_bits,
                                 relu=relu, scale=float(s_out), max_terms=requant_terms))
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
    qmodel = ir.Model(name=name, input_shape=(c, h, w), input_bits=act_bits,
                      input_scale=float(in_scale[first]), layers=layers,
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
    first subtract ``meta["adder_offsets"][name]`` per output channel (the clipped weights).
    """
    model.eval()
    stages = _parse(model)
    out = []
    for st, rec in zip(stages, _trace(stages, torch.as_tensor(np.array(x_float, dtype=np.float32)))):
        if st.kind == "adder":
            out.append(rec["acc"].double().numpy())
        out.append(rec["out"].double().numpy())
    return out
