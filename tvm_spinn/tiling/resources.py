"""Resource model of a SpiNNaker core, chip and board (SpiNN-5), and the cycle model.

Sizes are the hardware's (see shared/notes/spinnaker.md); the kernels' cycle costs are
the calibrated model of :mod:`tvm_spinn.tiling.cycle_model`.
"""
from __future__ import annotations

from dataclasses import dataclass

DTCM_BYTES = 64 * 1024
ITCM_BYTES = 32 * 1024
# DTCM kept for the spin1 runtime: measured by linking each kernel against the real SDK
# (spinnaker_tools / front-end-common 7.4.1) and running its start-up under qemu: stack,
# static data (the binding's state with its 2.3 KB packet queue), SARK's heap headers and
# SDP buffers take 7,724-7,928 B; each of the binding's 2 allocations adds a 12 B heap
# header and up to 4 B of alignment. Rounded up with a margin.
DTCM_RESERVED_BYTES = 8 * 1024 + 256
# ITCM for the spin1 runtime, the front-end's simulation/data-spec code and the C library
# parts linked beside a kernel (the kernels' own sizes come from the ARM build check).
# Measured: each kernel's .aplx built against the real SDK 7.4.1 (arm-none-eabi-size text)
# less its size in tools/arm_build_check.py is 12,896-15,400 B; the image's ITCM is 32,512 B
# (sark.lnk). 16.5 KB keeps about 1.2 KB of margin on the largest.
ITCM_RUNTIME_BYTES = 16 * 1024 + 512
N_SLOTS = 4  # samples in flight per core (double buffering would be 2)
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
    name: str
    version: int  # spinnakergraphfrontend's machine version
    chips: int
    app_cores: int  # application cores (core 0 of each chip is the monitor)
    router_entries: int = 1023
    host_link_bits_per_s: float = 100e6


# The toolchain's virtual SpiNN-5 has 8 chips with 16 application cores, 40 with 17.
SPINN_5 = Board("SpiNN-5", 5, 48, 808)
SPINN_3 = Board("SpiNN-3", 3, 4, 68)
BOARDS = {"spinn5": SPINN_5, "spinn3": SPINN_3}

