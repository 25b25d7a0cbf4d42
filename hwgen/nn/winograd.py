"""Winograd-AdderNet convolution F(2×2, 3×3) (Li et al., "Winograd Algorithm for AdderNet", ICML 2021).

The Winograd form of a 3×3 convolution works on 4×4 input tiles ``d`` taken with step 2 and gives
2×2 output tiles::

    multiplication:  Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
    adder:           Y = Aᵀ [ -Σ_c |U[o, c] - V[c]|^p ] A,   U = G g Gᵀ,  V = Bᵀ d B

with the power ``p`` and the absolute value element-wise over the 4×4 tile and the sum over the
input channels ``c`` inside the brackets (so the 16 "lanes" of a tile are 16 independent AdderNet
dot products of length ``C``).  As in the paper, the weights are trained directly in the
transformed domain: the parameter is ``U`` of shape ``(O, C, 4, 4)``; ``G`` only serves to
initialise it (``U = G g Gᵀ`` with ``g`` a He-normal 3×3 kernel).

Transform sets are data (:data:`TRANSFORMS`, :func:`transform_set`): ``Bᵀ`` (4×4), ``G`` (4×3) and
``Aᵀ`` (2×4), every entry in ``{0, ±1, ±½}`` so that every transform is additions and shifts.
Shipped:

============  ======================================================================
``standard``  Lavin & Gray's F(2×2, 3×3).
``balanced``  the output transform of the paper's argument, derived here (exact for
              multiplication as well):
============  ======================================================================

    The coefficient of ``M[i, j]`` in output ``(a, b)`` of a tile is ``Aᵀ[a, i]·Aᵀ[b, j]``: the
    rows of ``Aᵀ ⊗ Aᵀ``.  With the standard ``Aᵀ = [[1,1,1,0],[0,1,-1,-1]]`` output (0,0) sums nine
    terms all with ``+``, (0,1) and (1,0) have three ``+`` and six ``-``, (1,1) five ``+`` and four
    ``-``.  For a product this does not matter, but every AdderNet term ``-|U - V|`` is <= 0, so
    the four outputs of a tile get different distributions (output (0,0) is always a large
    negative number, (1,1) a signed mix), while the BatchNorm after the layer is shared by all
    four positions: a checkerboard bias the layer cannot learn away.  If row ``a`` of ``Aᵀ`` has
    ``p_a`` positive and ``m_a`` negative entries, output ``(a, b)`` has ``p_a p_b + m_a m_b``
    positive and ``p_a m_b + m_a p_b`` negative terms; all four outputs get the same mix iff
    ``(p_0, m_0) = (p_1, m_1)`` (the other solution, ``p_0 = m_1, m_0 = p_1``, needs
    ``p_0 = m_0``, an even number of non-zeros, while an F(2,3) output row has three).  An exact
    half-and-half split is impossible with nine terms; the best is five ``+`` and four ``-``.

    Such an ``Aᵀ`` that stays exact for multiplication comes from the one freedom that keeps the
    identity: for a diagonal ``D`` with ``D² = I`` (signs ``±1``), ``Aᵀ D [(D G g) ⊙ (Bᵀ d)] =
    Aᵀ [(G g) ⊙ (Bᵀ d)]`` because ``D`` commutes with ``⊙``.  ``Aᵀ D`` flips columns of ``Aᵀ``:
    row 0 becomes ``(s0, s1, s2, 0)``, row 1 ``(0, s1, -s2, -s3)``.  Both rows have two ``+`` and
    one ``-`` exactly for ``s = (+, +, -, +)`` (and one ``+``, two ``-`` for ``s = (-, -, +, -)``,
    the same set negated), giving ``Aᵀ = [[1,1,-1,0],[0,1,1,-1]]`` and ``G`` with its third row
    negated, ``Bᵀ`` unchanged.  Every output of a tile then sums nine terms, five with ``+`` and
    four with ``-``.  (Since ``U`` is trained directly and the sign of a row of ``U`` is free, the
    change of ``G`` only affects the initialisation: the balanced set differs from the standard
    one in ``Aᵀ`` alone.)  The set keeps: the exact F(2×2,3×3) identity for multiplication, the
    entries in ``{0, ±1, ±½}``, the same count of additions in every transform.  The paper's own
    matrices could not be retrieved here (only its abstract was available), so this set is
    derived from the argument, not copied.

A user's own set is a dict ``{"bt": 4×4, "g": 4×3, "at": 2×4}`` (nested lists; ``0.5`` for ½),
checked when the layer is built: a wrong shape or an entry outside ``{0, ±1, ±½}`` is a one-line
:class:`ValueError`.  It need not be exact for multiplication (:func:`exact_for_multiplication`
tells).

The l2-to-l1 schedule (``l2_to_l1=True``): the lane distance is ``|U - V|^p`` and ``p`` is
annealed from 2 (an l2 distance) to 1 (l1, what the integer model computes) by
:meth:`WinogradAdderConv2d.epoch_hook`, which :func:`hwgen.nn.train.train` calls before every
epoch: ``p(e) = 2 - min(1, e / ceil(E / 2))`` for epoch ``e = 0 … E-1`` of ``E`` — linear from 2
at the first epoch to 1 at the middle of training, then 1 for the second half (so the model is
trained as l1 before it is used as l1); after training the hook is called with ``e = E`` and ``p``
is 1.  A layer built outside training (or loaded from a checkpoint) has ``p = 1``.

Gradients (:func:`hwgen.nn.adder.adder_l1`, shared with the direct AdderNet layers): the
full-precision gradient ``V - U`` for ``U``, the HardTanh-clipped ``HT(U - V)`` for ``V`` (then
back through ``Bᵀ · B`` and the tile extraction to the input), and the adaptive learning rate
``eta`` with one norm over the whole ``U`` of the layer — the same surrogate for any ``p``.

Sizes.  Stride 1, padding 0 or 1; output ``OH = H + 2·padding - 2``.  The output is made of
``ceil(OH/2) × ceil(OW/2)`` whole 2×2 tiles: when ``OH`` or ``OW`` is odd (e.g. a 3×3 or 5×5 map),
the padded input gets extra zero rows/columns at the bottom/right to complete the last tiles and
the output is cropped back to ``OH × OW`` (the dropped outputs never influence the kept ones).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .adder import DEFAULT_ETA, adder_l1

__all__ = ["WinogradAdderConv2d", "winograd_adder_conv2d",
           "TRANSFORMS", "transform_set", "exact_for_multiplication",
           "l2_to_l1_power"]

_H = 0.5
#: The shipped transform sets by name: ``bt`` (``Bᵀ``, 4×4), ``g`` (4×3), ``at`` (``Aᵀ``, 2×4).
TRANSFORMS: dict[str, dict[str, list[list[float]]]] = {
    "standard": {
        "bt": [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        "g": [[1, 0, 0], [_H, _H, _H], [_H, -_H, _H], [0, 0, 1]],
        "at": [[1, 1, 1, 0], [0, 1, -1, -1]],
    },
    "balanced": {
        "bt": [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        "g": [[1, 0, 0], [_H, _H, _H], [-_H, _H, -_H], [0, 0, 1]],
        "at": [[1, 1, -1, 0], [0, 1, 1, -1]],
    },
}
_SHAPES = {"bt": (4, 4), "g": (4, 3), "at": (2, 4)}
_ALLOWED = (0.0, 1.0, -1.0, 0.5, -0.5)


def transform_set(spec) -> dict[str, torch.Tensor]:
    """The transform set ``spec`` (a name of :data:`TRANSFORMS` or a dict) as float64 tensors.

    Raises :class:`ValueError` (one line) for an unknown name, a missing or extra key, a wrong
    shape or an entry outside ``{0, ±1, ±½}``.
    """
    if isinstance(spec, str):
        if spec not in TRANSFORMS:
            raise ValueError(f"unknown Winograd transform set {spec!r}; use one of "
                             f"{', '.join(sorted(TRANSFORMS))} or a dict with keys bt, g, at")
        spec = TRANSFORMS[spec]
    if not isinstance(spec, dict) or set(spec) != set(_SHAPES):
        got = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"a Winograd transform set must be a name ({', '.join(sorted(TRANSFORMS))}) "
                         f"or a dict with exactly the keys at, bt, g; got {got}")
    out = {}
    for key in ("bt", "g", "at"):
        try:
            t = torch.tensor(spec[key], dtype=torch.float64)
        except (TypeError, ValueError):
            raise ValueError(f"Winograd transform {key}: not a matrix of numbers: {spec[key]!r}") from None
        if tuple(t.shape) != _SHAPES[key]:
            raise ValueError(f"Winograd transform {key}: expected shape {_SHAPES[key][0]}×{_SHAPES[key][1]}, "
                             f"got {'×'.join(map(str, t.shape)) or 'a scalar'}")
        bad = ~torch.isin(t, torch.tensor(_ALLOWED, dtype=torch.float64))
        if bad.any():
            i, j = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"Winograd transform {key}[{i}][{j}] = {float(t[i, j])!r}: entries must be "
                             f"0, ±1 or ±0.5 (adders and shifts only)")
        out[key] = t
    return out


def exact_for_multiplication(spec) -> bool:
    """Whether ``Aᵀ[(G g) ⊙ (Bᵀ d)]`` is the 1-D correlation F(2, 3) (so the 2-D nesting is F(2×2, 3×3))."""
    t = transform_set(spec)
    # y_a = sum_i at[a, i] (sum_k g[i, k] g_k) (sum_j bt[i, j] d_j) must be sum_k g_k d_{a+k}:
    # coefficient of g_k d_j is sum_i at[a, i] g[i, k] bt[i, j].
    coef = torch.einsum("ai,ik,ij->akj", t["at"], t["g"], t["bt"])
    want = torch.zeros(2, 3, 4, dtype=torch.float64)
    for a in range(2):
        for k in range(3):
            want[a, k, a + k] = 1.0
    return bool(torch.allclose(coef, want, atol=1e-12))


def l2_to_l1_power(epoch: int, epochs: int) -> float:
    """The exponent of the l2-to-l1 schedule: ``2 - min(1, epoch / ceil(epochs / 2))``."""
    half = max(1, math.ceil(epochs / 2))
    return 2.0 - min(1.0, max(0, epoch) / half)


def winograd_adder_conv2d(x: torch.Tensor, weight: torch.Tensor, bt: torch.Tensor, at: torch.Tensor,
                          padding: int, p: float = 1.0, eta: float | None = None) -> torch.Tensor:
    """Functional :class:`WinogradAdderConv2d`: ``x (N, C, H, W)``, ``weight`` is ``U (O, C, 4, 4)``.
    """
    n, c, h, w = x.shape
    out_channels = weight.shape[0]
    oh, ow = h + 2 * padding - 2, w + 2 * padding - 2
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    pad = padding
    # Whole tiles: the padded input is 2·tiles + 2 wide; extra zeros at the bottom/right, cropped
    # below.
    x = F.pad(x, (pad, 2 * tw + 2 - w - pad, pad, 2 * th + 2 - h - pad))
    tiles = th * tw
    cols = F.unfold(x, 4, stride=2)                                    # (N, C*16, T)
    d = cols.reshape(n, c, 16, tiles).permute(2, 0, 3, 1).reshape(16, n * tiles, c)
    bb = torch.kron(bt, bt).to(x.dtype)                                # (16, 16): vec(Bᵀ d B)
    v = (bb @ d.reshape(16, -1)).reshape(16, n * tiles, c)             # lanes × (tile) × channel
    u = weight.to(x.dtype).reshape(out_channels, c, 16).permute(2, 0, 1)  # (16, O, C)
    m = adder_l1(v, u, eta, p)                                         # (16, N*T, O)
    aa = torch.kron(at, at).to(x.dtype)                                # (4, 16): vec(Aᵀ M A)
    y = (aa @ m.reshape(16, -1)).reshape(2, 2, n, th, tw, out_channels)
    y = y.permute(2, 5, 3, 0, 4, 1).reshape(n, out_channels, 2 * th, 2 * tw)
    return y[:, :, :oh, :ow]


class WinogradAdderConv2d(nn.Module):
    """Winograd-AdderNet 3×3 convolution, stride 1, no bias (a BatchNorm follows).

    ``weight`` is ``U``, ``(out_channels, in_channels, 4, 4)``; buffers ``bt`` (4×4), ``g`` (4×3),
    ``at`` (2×4) hold the transform set (float32, saved in the state dict).  Input ``(N, C, H, W)``,
    output ``(N, O, H + 2·padding - 2, W + 2·padding - 2)``.  ``p`` is the lane exponent (1 unless
    the l2-to-l1 schedule is running); ``eta`` the adaptive learning rate of ``U`` (``None``: off).
    """

    def __init__(self, in_channels: int, out_channels: int, padding: int = 1, transform="standard",
                 eta: float | None = DEFAULT_ETA, l2_to_l1: bool = False):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"WinogradAdderConv2d: {name} must be a positive integer, got {v!r}")
        if padding not in (0, 1) or isinstance(padding, bool):
            raise ValueError(f"WinogradAdderConv2d: padding must be 0 or 1 (a 3×3 kernel), got {padding!r}")
        t = transform_set(transform)
        self.in_channels, self.out_channels, self.padding = in_channels, out_channels, padding
        self.eta, self.l2_to_l1, self.p = eta, bool(l2_to_l1), 1.0
        for key, value in t.items():
            self.register_buffer(key, value.float())
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 4, 4))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """``U = G g Gᵀ`` with ``g`` He-normal on the fan-in ``C·9`` (as the direct adder layer)."""
        g = torch.empty(self.out_channels, self.in_channels, 3, 3)
        nn.init.kaiming_normal_(g, mode="fan_in", nonlinearity="relu")
        self.weight.copy_(torch.einsum("ik,ockl,jl->ocij", self.g, g, self.g))

    def epoch_hook(self, epoch: int, epochs: int) -> None:
        """Called by the trainer before epoch ``epoch`` of ``epochs`` (and with ``epoch = epochs`` at the end)."""
        self.p = l2_to_l1_power(epoch, epochs) if self.l2_to_l1 else 1.0

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        oh, ow = h + 2 * self.padding - 2, w + 2 * self.padding - 2
        if oh < 1 or ow < 1:
            raise ValueError(f"WinogradAdderConv2d: input {h}×{w} too small for a 3×3 kernel with "
                             f"padding {self.padding}")
        return oh, ow

    def forward(self, x):
        if torch.compiler.is_exporting():  # one node for torch.export (see hwgen.nn.ops)
            return torch.ops.hwgen.winograd_adder_conv2d(x, self.weight, self.bt, self.g, self.at,
                                                         self.padding, self.p, self.eta)
        self.output_size(*x.shape[2:])
        return winograd_adder_conv2d(x, self.weight, self.bt, self.at, self.padding, self.p,
                                     self.eta)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size=3, padding={self.padding}, "
                f"eta={self.eta}, l2_to_l1={self.l2_to_l1}, p={self.p}")
