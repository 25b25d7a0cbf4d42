"""The quantizer: a trained PyTorch model (:mod:`hwgen.nn`) → an integer model (:mod:`hwgen.ir`).

Supported module sequences (a chain, as :func:`hwgen.capture.capture` reads it: a flat or nested
:class:`torch.nn.Sequential`, or a ``forward()`` of these modules and their functional forms):

* a weight layer optionally followed by ``BatchNorm2d | BatchNorm1d`` and ``ReLU``: the weight
  layer plus one :class:`hwgen.ir.Requant` (BatchNorm folded, ReLU fused).  Weight layers:

  - ``AdderConv2d | AdderLinear`` (AdderNet) → ``ir.AdderConv2d | ir.AdderDense``;
  - ``ShiftConv2d | ShiftLinear`` (DeepShift, both forms) → ``ir.ShiftConv2d | ir.ShiftDense``;
  - ``WinogradAdderConv2d`` (Winograd-AdderNet, :mod:`hwgen.nn.winograd`, at ``p = 1``) →
    ``ir.WinogradAdderConv2d``;
  - ``nn.Conv2d | nn.Linear`` (the multiplier baseline; a bias is folded into the requantizer's
    bias; no groups or dilation) → ``ir.Conv2d | ir.Dense``;

* ``MaxPool2d`` (kernel = stride, no padding), ``Flatten``: mapped 1:1;
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

from . import capture, golden, ir
from .ir import csd_round
from .kinds import Quantizer, registered

__all__ = ["quantize", "quantize_input", "float_reference", "csd_round"]


# --------------------------------------------------------------------------- helpers

@dataclass
class _Stage:
    """One unit of the integer model, in order: a module and the quantizer of its kind
    (:class:`hwgen.kinds.Quantizer`), with the BatchNorm and ReLU a weight layer absorbs."""

    handler: Quantizer
    module: nn.Module
    bn: nn.Module | None = None
    relu: bool = False
    act: nn.Module | None = None             # ReLU, ReLU6 or Hardtanh after the weight layer
    clip: tuple[float, float] | None = None  # ReLU6 / Hardtanh bounds: the requantizer's clamp


_SKIP = (nn.Identity, nn.Dropout)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


def _handlers() -> dict[type, Quantizer]:
    """Every PyTorch module class a registered layer kind takes, and its quantizer."""
    return {t: q for cls in registered() for q in cls.quantizers for t in q.modules()}


def _handler(module: nn.Module, handlers: dict[type, Quantizer]) -> Quantizer | None:
    """The quantizer of ``module``'s most specific class that has one."""
    return next((handlers[t] for t in type(module).__mro__ if t in handlers), None)


def _unsupported(name, module, why=""):
    supported = ", ".join([t.__name__ for t in _handlers()]
                          + ["BatchNorm1d/2d", "ReLU", "ReLU6", "Hardtanh", "Dropout", "Identity"])
    raise ir.ModelError(f"quantize: module {name!r} of type {type(module).__name__} is not "
                        f"supported{why} (supported: {supported})")


def _parse(model: nn.Module) -> list[_Stage]:
    stages: list[_Stage] = []
    handlers = _handlers()
    before = capture.INPUT
    for node in capture.capture(model):
        name, m = node.name, node.module
        if isinstance(m, capture.Add):
            _unsupported(name, m, " (x + y, a residual add): the integer model is a chain of "
                                  "layers")
        if node.inputs != (before,):
            raise ir.ModelError(f"quantize: node {name!r} reads {', '.join(node.inputs)}, not the "
                                f"node before it ({before}); the integer model is a chain of "
                                f"layers")
        before = name
        if isinstance(m, _SKIP):
            continue
        last = stages[-1] if stages else None
        weighted = last is not None and last.handler.weighted
        if isinstance(m, nn.Flatten) and last is not None and (
                isinstance(last.module, nn.Flatten) or (weighted and last.handler.rank == 2)):
            continue  # a flatten of a flat (N, K) tensor changes nothing
        handler = _handler(m, handlers)
        if handler is not None:
            why = handler.check(m)
            if why:
                _unsupported(name, m, why)
            stages.append(_Stage(handler, m))
        elif isinstance(m, _BATCHNORM):
            want = nn.BatchNorm2d if weighted and last.handler.rank == 4 else nn.BatchNorm1d
            if not weighted or last.bn is not None or last.relu or not isinstance(m, want):
                _unsupported(name, m, " here: a BatchNorm must directly follow a weight layer "
                                      "of matching rank")
            if not m.track_running_stats or m.running_mean is None:
                _unsupported(name, m, " without running statistics")
            last.bn = m
        elif isinstance(m, (nn.ReLU, nn.Hardtanh)):  # nn.ReLU6 is a Hardtanh
            if not weighted or last.act is not None:
                _unsupported(name, m, f" here: a {type(m).__name__} must follow a weight layer or "
                                      f"its BatchNorm")
            last.act = m
            if isinstance(m, nn.Hardtanh):
                if not m.min_val < m.max_val:
                    _unsupported(name, m, f" with min_val {m.min_val} >= max_val {m.max_val}")
                last.clip = (float(m.min_val), float(m.max_val))
            last.relu = last.clip is None or last.clip[0] >= 0
        else:
            _unsupported(name, m)
    if not any(s.handler.weighted for s in stages):
        raise ir.ModelError("quantize: the model has no weight layer (adder, shift, conv or "
                            "linear)")
    return stages


@torch.no_grad()
def _trace(stages: list[_Stage], x: torch.Tensor) -> list[dict]:
    """Float tensors of every stage: input, the weight layer's raw output (without a bias),
    the output."""
    out = []
    for st in stages:
        rec = {"in": x}
        x = st.module(x)
        if st.handler.weighted:
            bias = st.handler.bias(st.module)
            rec["acc"] = x if bias is None else x - bias.reshape((1, -1) + (1,) * (x.dim() - 2))
            if st.bn is not None:
                x = st.bn(x)
            if st.act is not None:
                x = st.act(x)
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
    """``(A_c, B_c)`` of ``z = A_c * acc + B_c``: BatchNorm folded, with a multiplier layer's
    bias."""
    bias = st.handler.bias(st.module)
    bias = np.zeros(channels) if bias is None else bias.detach().double().numpy()
    if st.bn is None:
        return np.ones(channels), bias
    bn = st.bn
    var = bn.running_var.double().numpy()
    gamma = bn.weight.detach().double().numpy() if bn.affine else np.ones(channels)
    beta = bn.bias.detach().double().numpy() if bn.affine else np.zeros(channels)
    a = gamma / np.sqrt(var + bn.eps)
    return a, beta + a * (bias - bn.running_mean.double().numpy())


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
    weights = [i for i, st in enumerate(stages) if st.handler.weighted]

    # Scale of every tensor that feeds a weight layer.  Its input is signed when the weight layer
    # before it has no ReLU (the image, before the first, is unsigned).
    in_scale: dict[int, float] = {}
    signed_in: dict[int, bool] = {}
    # Average pools: their integer layer is the sum of ``d`` codes, worth 1/d of the codes' scale.
    div = [st.handler.divisor(st.module, tuple(rec["in"].shape)) for st, rec in zip(stages, trace)]
    divisors: dict[int, int] = {}
    for k, i in enumerate(weights):
        signed = k > 0 and not stages[weights[k - 1]].relu
        before = weights[k - 1] + 1 if k else 0
        divisors[i] = int(np.prod(div[before:i]))
        # After average pools, the activations are those before them: their sum is what the
        # layer takes, at 1/d of their scale (the sum's top code is d times theirs).
        x_in = trace[i]["in"] if divisors[i] == 1 else trace[before]["in"]
        a = _calib_max(x_in.abs() if signed else x_in, percentile)
        top = (1 << (act_bits - 1)) - 1 if signed else (1 << act_bits) - 1
        s = stages[i].handler.input_scale(stages[i].module, a, top * divisors[i], signed, weight_bits)
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
    layer_meta: dict[str, dict] = {"adder_offsets": {}}  # per key: {layer name: value}
    options = {"weight_bits": weight_bits, "mac_per_channel": mac_per_channel}
    counters: dict[str, int] = {}

    def new_name(prefix):
        counters[prefix] = counters.get(prefix, -1) + 1
        return f"{prefix}{counters[prefix]}"

    for i, st in enumerate(stages):
        if not st.handler.weighted:
            layers.append(st.handler.layer_for(st.module, new_name(st.handler.prefix),
                                               tuple(trace[i]["in"].shape)))
            scale /= div[i]
            scales.append(scale)
            continue
        # ---- weight layer: integer weights and the real value of one accumulator LSB (per channel)
        s_in = in_scale[i]
        if not math.isclose(s_in, scale, rel_tol=1e-12):
            raise AssertionError(f"scale mismatch at stage {i}")  # the scale plan is one chain
        lname = new_name(st.handler.prefix)
        q = st.handler.quantize(st.module, lname, s_in, options)
        layer, acc_scale, offset = q.layer, q.acc_scale, q.offset
        scales.append(q.layer_scale)
        for key, value in q.meta.items():
            layer_meta.setdefault(key, {})[lname] = value
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
        "adder_offsets": layer_meta.pop("adder_offsets"),
        "calibration_images": int(len(x_calib)),
        **layer_meta,
    }
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
        if st.handler.weighted:
            out.append(rec["acc"].double().numpy())
        out.append(rec["out"].double().numpy())
    return out
