"""Resource model of a SpiNNaker core, chip and board (SpiNN-5), and the cycle model.

Sizes are the hardware's (see shared/notes/spinnaker.md); the kernels' cycle costs are
the calibrated model of :mod:`tvm_spinn.tiling.cycle_model`.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

DTCM_BYTES = 64 * 1024
ITCM_BYTES = 32 * 1024
# DTCM kept for the spin1 runtime: measured by linking each kernel against the real SDK
# (spinnaker_tools / front-end-common 7.4.1) and running its start-up under qemu: stack,
# static data (the binding's state with its 2.3 KB packet queue), SARK's heap headers and
# SDP buffers take 7,724-7,928 B; each of the binding's 2 allocations adds a 12 B heap
# header and up to 4 B of alignment. Rounded up with a margin.
DTCM_RESERVED_BYTES = 8 * 1024 + 256
# ITCM for the spin1 runtime, the front-end's simulation/data-spec code and the C library
# parts linked beside a kernel (the kernels' own sizes come from the ARM build check, which
# compiles them with the .aplx build's -Ofast: spinnaker_tools' FEC_OPT = OTIME).
# Measured: each kernel's .aplx built against the real SDK 7.4.1 (arm-none-eabi-size text)
# less its size in tools/arm_build_check.py is 11,636-11,704 B, and the image's ITCM is
# 32,512 B of the 32 KB (sark.lnk): 11,704 + 256 + 128 B of margin (the conv tile: 32,216 B
# of text in the real build, 20,512 B in the check). The check compiled at
# -Os before, which understated the real build by 5 KB: the conv tile overflowed the real
# ITCM by 240 B while the check passed.
ITCM_RUNTIME_BYTES = 11_704 + 256 + 128
N_SLOTS = 4  # samples in flight per core (double buffering would be 2): the default
# What a build tries first: the host keeps this many samples in flight, which a deep model's
# pipeline needs (its throughput is at most the samples in flight / the latency of one), where
# the extra input buffers cost no core (codegen.plan_function).
MORE_SLOTS = 8
_SLOTS: ContextVar[int] = ContextVar("tvm_spinn_slots", default=N_SLOTS)


def n_slots() -> int:
    """Samples in flight per core of what is being planned and built (:func:`slots`)."""
    return _SLOTS.get()


@contextmanager
def slots(n: int) -> Iterator[None]:
    """Plan and build with n samples in flight per core (each core buffers n samples' inputs;
    the kernels take up to SPINN_MAX_SLOTS = 16)."""
    if not 1 <= n <= 16:
        raise ValueError(f"{n} samples in flight per core: from 1 to 16")
    token = _SLOTS.set(n)
    try:
        yield
    finally:
        _SLOTS.reset(token)
CLOCK_HZ = 200_000_000
# Least cycles per sample per core the planner sizes tiles to meet (250 us at 200 MHz); a
# model's own budget is the time the host link takes to stream one of its samples in, if
# longer (host_link_cycles): a core faster than its input arrives only takes more cores.
DEFAULT_CYCLE_BUDGET = 50_000.0
# The host-to-board rate the live IO paces to by default (runtime.board.live_io,
# TVM_SPINN_LINK_MBPS = 32 Mbit/s of UDP payload), below the 5-10 MB/s measured.
HOST_IN_BYTES_PER_S = 32e6 / 8


def host_link_cycles(n_values: int, bytes_per_s: float = HOST_IN_BYTES_PER_S) -> float:
    """Cycles (200 MHz) the host link takes to stream n_values int16 values into a board:
    8 bytes per key + payload pair, 12 bytes of headers per 31 pairs (runtime.timing)."""
    pairs = (n_values + 1) // 2
    return (pairs * 8 + -(-pairs // 31) * 12) / bytes_per_s * CLOCK_HZ


@dataclass(frozen=True)
class Board:
    """A SpiNNaker machine the build maps for: one board, or several joined by their links.

    version: spinnakergraphfrontend's machine version (5 = SpiNN-5 boards of 48 chips).
    chips / app_cores: of the whole machine (core 0 of each chip is the monitor).
    boards: boards of the machine. width, height: its chip grid as the toolchain 7.4.1 sizes a
    virtual machine of that many boards (spinn_machine.version.version_48_chips: 8 x 8 for one
    SpiNN-5 board; a multiple of 12 wraps around, so 12 x 12 is a triad of 3 boards whose
    links close into a torus). ethernet_chips: the chip of each board that holds its Ethernet
    port (the host link, the IP tags), spinn_machine's SpiNNakerTriadGeometry.
    key: the ``board=`` name of tvm_spinn.build.
    """

    name: str
    version: int  # spinnakergraphfrontend's machine version
    chips: int
    app_cores: int  # application cores (core 0 of each chip is the monitor)
    router_entries: int = 1023
    boards: int = 1
    width: int = 8
    height: int = 8
    ethernet_chips: Tuple[Tuple[int, int], ...] = ((0, 0),)
    key: str = ""

    @property
    def wraps(self) -> bool:
        """Whether the chip grid wraps around (links from the last column / row to the first)."""
        return self.boards > 1 and self.width % 12 == 0 and self.height % 12 == 0

    def ethernet_chip_of(self, x: int, y: int) -> Tuple[int, int]:
        """The Ethernet chip of the board chip (x, y) sits on (a SpiNN-3 has one board).

        Raises ValueError for a chip that is on no board of this machine."""
        if self.version != 5:
            return self.ethernet_chips[0]
        for ex, ey in self.ethernet_chips:
            dx, dy = (x - ex) % self.width, (y - ey) % self.height
            if (dx, dy) in SPINN5_CHIPS:
                return ex, ey
        raise ValueError(f"chip ({x}, {y}) is on no board of the {self.name}")


# The 48 chips of a SpiNN-5 board relative to its Ethernet chip: row y holds x from
# max(0, y - 3) to min(7, y + 4) (the hexagonal board, spinn_machine.version.version_5).
SPINN5_CHIPS = frozenset((x, y) for y in range(8) for x in range(max(0, y - 3), min(7, y + 4) + 1))

# The toolchain's virtual SpiNN-5 has 8 chips with 16 application cores, 40 with 17.
SPINN_5 = Board("SpiNN-5", 5, 48, 808, key="spinn5")
SPINN_3 = Board("SpiNN-3", 3, 4, 68, width=2, height=2, key="spinn3")
# Three SpiNN-5 boards as one triad (what spalloc allocates as a 1 x 1 triad torus): the
# boards' edge links join through each board's FPGAs (runtime.timing models them).
SPINN_5_X3 = Board("3 x SpiNN-5 (triad)", 5, 3 * 48, 3 * 808, boards=3, width=12, height=12,
                   ethernet_chips=((0, 0), (4, 8), (8, 4)), key="spinn5x3")
BOARDS = {b.key: b for b in (SPINN_5, SPINN_3, SPINN_5_X3)}


def machine_of(version: int, boards: int) -> Board:
    """The Board of that machine version and number of boards (ValueError if none)."""
    for b in BOARDS.values():
        if (b.version, b.boards) == (version, boards):
            return b
    raise ValueError(f"no machine of version {version} with {boards} board(s)")


def board_named(name: str) -> Optional[Board]:
    """The Board whose ``name`` (BoardProgram.board) or ``key`` is ``name``, or None."""
    return next((b for b in BOARDS.values() if name in (b.name, b.key)), None)


def bigger_board_hint(board: Board, n_cores: int) -> str:
    """A sentence naming the smallest machine of the same boards with at least n_cores
    application cores (the ``board=`` option that fits), or "" when none does."""
    fits = [b for b in BOARDS.values() if b.version == board.version and b.app_cores > board.app_cores
            and b.app_cores >= n_cores]
    if not fits:
        return ""
    b = min(fits, key=lambda b: b.app_cores)
    return (f" It fits {b.boards} boards: tvm_spinn.build(..., board={b.key!r}) maps it across a "
            f"{b.name} ({b.app_cores:,} application cores).")
