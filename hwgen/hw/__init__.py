"""Amaranth components of hwgen: streaming engines, one per layer, and the accelerator top.

Every engine speaks the same stream format: ``stream.Signature(data.ArrayLayout(elem, C))``,
one pixel (all ``C`` channels) per beat, raster order, images back to back with no
sideband; engines count positions themselves.  Element shapes come from
:func:`elem_shape`, over the ranges of :meth:`hwgen.ir.Model.value_ranges`.
"""

from __future__ import annotations

from contextlib import contextmanager

from amaranth import Shape, signed, unsigned

from .. import ir


def elem_shape(lo: int, hi: int) -> Shape:
    """Amaranth shape of a stream element holding values in ``[lo, hi]`` (via :func:`hwgen.ir.bits_for`)."""
    width, is_signed = ir.bits_for(lo, hi)
    return signed(width) if is_signed else unsigned(width)


def divisors(n: int) -> list[int]:
    """The divisors of ``n``, ascending: the foldings of ``n`` channels or outputs."""
    return [d for d in range(1, n + 1) if n % d == 0]


def ice40_blocks(width: int, depth: int) -> int:
    """SB_RAM40_4K blocks a ``depth`` × ``width``-bit memory takes (256×16, 512×8, 1024×4 or
    2048×2 each, the cheapest)."""
    return min(-(-width // w) * -(-depth // d) for d, w in ((256, 16), (512, 8), (1024, 4), (2048, 2)))


@contextmanager
def constructing(component):
    """Wrap a component's ``__init__``: if it raises, the half-built object is no forgotten
    elaboratable, so silence Amaranth's ``UnusedElaboratable`` warning for it."""
    try:
        yield
    except BaseException:
        component._MustUse__silence = True
        raise


__all__ = ["elem_shape", "constructing", "divisors", "ice40_blocks"]
