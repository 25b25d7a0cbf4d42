"""PLL settings for the boards' FPGAs: iCE40 ``SB_PLL40`` and ECP5 ``EHXPLLL``.

The searches are those of the vendor-neutral tools that ship with the YoWASP wheels,
``icepll`` (Project IceStorm) and ``ecppll`` (Project Trellis): same ranges, same order, same
tie-breaks, so the settings equal theirs (``tests/test_board_pll.py`` compares).
"""

from dataclasses import dataclass

from ..errors import HwgenError

__all__ = ["PLLError", "ICE40PLL", "ECP5PLL", "ice40_pll", "ecp5_pll"]


class PLLError(HwgenError, ValueError):
    """No PLL setting gives the clock asked for."""


@dataclass(frozen=True)
class ICE40PLL:
    """``SB_PLL40_*``, ``FEEDBACK_PATH="SIMPLE"``: ``f_out = f_in·(DIVF+1) / ((DIVR+1)·2^DIVQ)``."""

    f_in_mhz: float
    divr: int
    divf: int
    divq: int
    filter_range: int

    @property
    def f_out_mhz(self) -> float:
        return self.f_in_mhz / (self.divr + 1) * (self.divf + 1) / 2 ** self.divq


@dataclass(frozen=True)
class ECP5PLL:
    """``EHXPLLL`` with ``FEEDBK_PATH="CLKOP"``: ``f_out = f_in·CLKFB_DIV / CLKI_DIV``."""

    f_in_mhz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_out_mhz(self) -> float:
        return self.f_in_mhz * self.clkfb_div / self.clki_div

    @property
    def f_vco_mhz(self) -> float:
        return self.f_out_mhz * self.clkop_div


def _check(f_out: float, got: float, tolerance: float, what: str) -> None:
    if abs(got - f_out) > tolerance * f_out:
        raise PLLError(f"the {what} PLL cannot make {f_out:g} MHz (nearest {got:.3f} MHz); "
                       f"pick another --clock")


def ice40_pll(f_in_mhz: float, f_out_mhz: float, tolerance: float = 0.01) -> ICE40PLL:
    """The iCE40 PLL setting nearest ``f_out_mhz`` (``icepll`` without ``-m``'s extras)."""
    if not 16 <= f_out_mhz <= 275:
        raise PLLError(f"an iCE40 PLL makes 16..275 MHz, not {f_out_mhz:g} MHz")
    best = None
    for divr in range(16):
        f_pfd = f_in_mhz / (divr + 1)
        if not 10 <= f_pfd <= 133:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533 <= f_vco <= 1066:
                continue
            for divq in range(1, 7):
                f_out = f_vco / 2 ** divq
                if best is None or abs(f_out - f_out_mhz) < abs(best[0] - f_out_mhz):
                    best = (f_out, divr, divf, divq, f_pfd)
    if best is None:
        raise PLLError(f"an iCE40 PLL cannot take a {f_in_mhz:g} MHz input")
    f_out, divr, divf, divq, f_pfd = best
    _check(f_out_mhz, f_out, tolerance, "iCE40")
    limits = (17, 26, 44, 66, 101)
    filter_range = next((i + 1 for i, lim in enumerate(limits) if f_pfd < lim), 6)
    return ICE40PLL(f_in_mhz, divr, divf, divq, filter_range)


def ecp5_pll(f_in_mhz: float, f_out_mhz: float, tolerance: float = 0.01) -> ECP5PLL:
    """The ECP5 PLL setting nearest ``f_out_mhz``, VCO nearest 600 MHz on ties (``ecppll``)."""
    if not 10 <= f_out_mhz <= 400:
        raise PLLError(f"an ECP5 PLL makes 10..400 MHz, not {f_out_mhz:g} MHz")
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in_mhz / clki_div
        if not 3.125 <= f_pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            f_out = f_pfd * clkfb_div
            for clkop_div in range(1, 129):
                f_vco = f_out * clkop_div
                if not 400 <= f_vco <= 800:
                    continue
                key = (abs(f_out - f_out_mhz), abs(f_vco - 600))
                if best is None or key < best[0]:
                    best = (key, f_out, clki_div, clkfb_div, clkop_div)
    if best is None:
        raise PLLError(f"an ECP5 PLL cannot take a {f_in_mhz:g} MHz input")
    _, f_out, clki_div, clkfb_div, clkop_div = best
    _check(f_out_mhz, f_out, tolerance, "ECP5")
    return ECP5PLL(f_in_mhz, clki_div, clkfb_div, clkop_div)
