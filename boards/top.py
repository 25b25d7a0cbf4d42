"""The board top-level: a :class:`~hwgen.boards.link.LinkCore` on an amaranth-boards platform.

:class:`BoardTop` requests the board's UART and LEDs, makes the clocks and resets, and
instantiates the link core (the UART, the frame parser and reply, the accelerator):

* ``sync``, the line's domain, runs from the board's oscillator;
* ``accel``, the accelerator's, runs from the FPGA's PLL when the accelerator's clock differs
  from the oscillator (iCE40 ``SB_PLL40_2_PAD``: its port A passes the oscillator through to
  ``sync`` and port B is the PLL; ECP5 ``EHXPLLL`` on the oscillator's clock), held in reset
  until the PLL locks. When the clocks are equal there is one domain and no PLL.
"""

from amaranth import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, ResetSignal
from amaranth import Signal
from amaranth.build import Pins, Resource, Subsignal, Attrs
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .link import LinkCore
from .pll import ecp5_pll, ice40_pll

__all__ = ["BoardTop", "BAUD", "uart_divisor"]

#: The link's baud rate on a board (the host opens the port at this rate).
BAUD = 115200


def uart_divisor(osc_mhz: float, baud: int = BAUD) -> int:
    """Oscillator cycles per UART bit; the rate error stays under 1 % on every board."""
    divisor = round(osc_mhz * 1e6 / baud)
    if abs(osc_mhz * 1e6 / divisor - baud) > 0.01 * baud:
        raise ValueError(f"{osc_mhz:g} MHz cannot make {baud} baud within 1 %")
    return divisor


class BoardTop(Elaboratable):
    """The accelerator on a board, behind the board's UART (see :mod:`hwgen.boards.link`).

    Parameters
    ----------
    board : :class:`hwgen.boards.Board`
        The board (its platform is the one :meth:`elaborate` is given).
    accelerator : :class:`hwgen.hw.top.Accelerator`
        The accelerator.
    clock_mhz : float
        The accelerator's clock; equal to the oscillator's: one domain, no PLL.
    baud : int
        The UART's baud rate.
    max_count : int
        Images per frame the board takes.
    timeout_ms : float
        Silence that ends a frame early.

    LEDs: the board's first (green where it has colours) is lit while a frame is handled, the
    second (red) from an error reply to the next good reply.
    """

    def __init__(self, board, accelerator, *, clock_mhz: float | None = None, baud: int = BAUD,
                 max_count: int = 4, timeout_ms: float = 50.0):
        self.board = board
        self.clock_mhz = float(board.clock_mhz if clock_mhz is None else clock_mhz)
        self.pll = None
        if self.clock_mhz != board.osc_mhz:
            family = board.device.split("-")[0]
            make = ice40_pll if family == "ice40" else ecp5_pll
            self.pll = make(board.osc_mhz, self.clock_mhz)
            self.clock_mhz = self.pll.f_out_mhz
        divisor = uart_divisor(board.osc_mhz, baud)
        self.baud = baud
        self.core = LinkCore(accelerator, divisor=divisor,
                             timeout=max(20 * divisor, round(timeout_ms * 1e3 * board.osc_mhz)),
                             max_count=max_count,
                             accel_domain="sync" if self.pll is None else "accel")

    def describe(self) -> dict:
        """The board build's link and clocks, for the manifest and the host."""
        pll = None if self.pll is None else {"type": type(self.pll).__name__,
                                              **{k: v for k, v in vars(self.pll).items()}}
        return {"board": self.board.name, "osc_mhz": self.board.osc_mhz,
                "clock_mhz": self.clock_mhz, "pll": pll, "baud": self.baud,
                "domains": ["sync"] if self.pll is None else ["sync", "accel"],
                **self.core.describe()}

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        if self.pll is not None:
            if self.board.device.startswith("ice40"):
                self._ice40_clocks(m, platform)
            else:
                self._ecp5_clocks(m, platform)

        if self.board.uart_pins is not None:
            rx, tx = self.board.uart_pins
            platform.add_resources([Resource("uart", 0,
                                             Subsignal("rx", Pins(rx, dir="i", conn=("io", 0))),
                                             Subsignal("tx", Pins(tx, dir="o", conn=("io", 0))),
                                             Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"))])
        pins = {sub.name: "-" for sub in platform.lookup("uart", 0).ios}  # rx, tx (rts, dtr unused)
        uart = platform.request("uart", 0, dir=pins)
        m.submodules.uart_rx_pin = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_pin = tx = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx.i), tx.o.eq(core.tx)]

        requested = {}  # one request per resource: an RGB LED gives two of its colours
        for i, ((name, number, sub), value) in enumerate(zip(self.board.leds,
                                                              (core.busy, core.error))):
            if (name, number) not in requested:
                requested[name, number] = platform.request(name, number, dir="-")
            port = requested[name, number]
            m.submodules[f"led{i}"] = led = io.Buffer("o", getattr(port, sub) if sub else port)
            m.d.comb += led.o.eq(value)
        return m

    def _power_on_reset(self, m, cycles: int):
        """``sync`` held in reset for ``cycles`` after configuration (iCE40 block RAMs read
        garbage for about 3 µs after it)."""
        count = Signal(range(cycles + 1), reset_less=True)
        with m.If(count != cycles):
            m.d.sync += count.eq(count + 1)
        m.d.comb += ResetSignal("sync").eq(count != cycles)

    def _ice40_clocks(self, m, platform):
        p = self.pll
        m.domains.sync = ClockDomain("sync")
        m.domains.accel = ClockDomain("accel")
        clk = platform.request(platform.default_clk, dir="-")
        lock = Signal()
        sync_clk = Signal()
        accel_clk = Signal()
        m.submodules.pll = Instance(
            "SB_PLL40_2_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT_PORTB="GENCLK",
            p_DIVR=p.divr, p_DIVF=p.divf, p_DIVQ=p.divq, p_FILTER_RANGE=p.filter_range,
            i_PACKAGEPIN=clk.io, i_RESETB=Const(1), i_BYPASS=Const(0),
            o_PLLOUTGLOBALA=sync_clk, o_PLLOUTGLOBALB=accel_clk, o_LOCK=lock)
        m.d.comb += [ClockSignal("sync").eq(sync_clk), ClockSignal("accel").eq(accel_clk)]
        platform.add_clock_constraint(accel_clk, self.clock_mhz * 1e6)
        self._power_on_reset(m, round(15 * self.board.osc_mhz))
        m.submodules.accel_reset = ResetSynchronizer(~lock | ResetSignal("sync"), domain="accel")

    def _ecp5_clocks(self, m, platform):
        p = self.pll
        m.domains.accel = ClockDomain("accel")
        lock = Signal()
        accel_clk = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div,
            p_CLKOP_CPHASE=p.clkop_div - 1, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p.clkfb_div,
            i_RST=Const(0), i_STDBY=Const(0), i_CLKI=ClockSignal("sync"),
            o_CLKOP=accel_clk, i_CLKFB=accel_clk,
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
            i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0), o_LOCK=lock,
            a_FREQUENCY_PIN_CLKI=f"{self.board.osc_mhz:g}",
            a_FREQUENCY_PIN_CLKOP=f"{self.clock_mhz:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2")
        m.d.comb += ClockSignal("accel").eq(accel_clk)
        platform.add_clock_constraint(accel_clk, self.clock_mhz * 1e6)
        # The platform's sync domain has no reset signal (the global set/reset starts it).
        m.submodules.accel_reset = ResetSynchronizer(~lock, domain="accel")
