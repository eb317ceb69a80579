"""The host link's pace for a program: the fastest rate at which the timed emulation
predicts that a board drops no packet.

A board drops a multicast packet that waits longer than the router's 1.8 us for a core's
FIQ or a chip-to-chip link, and a core's binding drops one that finds its receive ring
full (runtime.timing). Nothing on a board holds a sender back, so a model whose input
arrives faster than its busiest cores and links take it loses samples. The runtime
therefore sends each program's input no faster than this pace: the first of
:data:`CANDIDATE_MBPS` at which a timed emulation of :data:`PROBE_GROUPS` sample windows
(zeros: the packets a sample sends do not depend on its values) predicts no drop (when
every rate drops some, the fastest with the fewest: then the drops come from inside the
board, which the host's pace does not help). The same
pace drives the timed emulation's figures and the real board's live IO
(runtime.board.live_io), so both say what a board would do.

``TVM_SPINN_LINK_MBPS`` set in the environment overrides it (the runtime then sends at
that rate, drops or not). All figures are MODELLED (the timed emulation), not measured.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional

import numpy as np

from ..errors import EmulatorError, LostSamplesError
from ..program.board import BoardProgram
from .board.loader import setting

log = logging.getLogger("tvm_spinn")

DEFAULT_MBPS = 32.0  # tiling.resources.HOST_IN_BYTES_PER_S: the runtime's rate before pacing
CANDIDATE_MBPS = (32.0, 28.0, 24.0, 20.0, 16.0, 14.0, 12.0, 10.0, 8.0, 6.0, 4.0, 3.0, 2.0)  # Mbit/s of UDP payload, tried in turn
PROBE_GROUPS = 2  # sample windows (n_slots samples, or groups of copies, each) a probe streams
ENV = "TVM_SPINN_LINK_MBPS"


def explicit_mbps() -> Optional[float]:
    """The rate TVM_SPINN_LINK_MBPS asks for (Mbit/s), or None when it is unset.
    Raises BoardError when it is not a positive number."""
    if not os.environ.get(ENV, "").strip():
        return None
    return setting(ENV, DEFAULT_MBPS)


# A timed emulation of the program at a rate (Mbit/s): the emulator's board, built by the
# caller (runtime.emulator.EmulatedBoard; passed in, so that this module needs no emulator).
TimedBoard = Callable[[float], "object"]


def probe(program: BoardProgram, timed_board: TimedBoard, mbps: float) -> int:
    """Packets a board would drop (timed emulation) streaming PROBE_GROUPS sample windows of
    zeros into ``program`` at ``mbps`` Mbit/s; timed_board(mbps): an emulated board of the
    program, timed at that rate."""
    # a window: n_slots groups of one sample per copy (fewer leave the window part empty, and
    # its drops unseen: ResNet-8 x 3 copies, 8 slots, 16 samples: none at 28 Mbit/s, 240 in 48)
    x = np.zeros((PROBE_GROUPS * program.n_slots * max(1, program.replicas), program.in_features), np.int16)
    board = timed_board(mbps)
    board.run(x)
    return int(board.last_timed.predicted_drops)


def chosen_mbps(program: BoardProgram) -> Optional[float]:
    """The pace :func:`host_mbps` chose for ``program`` (Mbit/s), or None before it did."""
    return getattr(program, "_host_mbps", None)


def host_mbps(program: BoardProgram, timed_board: TimedBoard) -> float:
    """The rate (Mbit/s) the runtime sends ``program``'s input at: TVM_SPINN_LINK_MBPS if set,
    else the program's pace (chosen once per program by :func:`choose`, then kept on it)."""
    explicit = explicit_mbps()
    if explicit is not None:
        return explicit
    chosen = chosen_mbps(program)
    if chosen is None:
        try:
            chosen = choose(program, timed_board)
        except (EmulatorError, LostSamplesError) as exc:  # a program that cannot stream zeros alone
            log.debug("%s: no host pace probed (%s); the default %g Mbit/s", program.name, exc, DEFAULT_MBPS)
            chosen = DEFAULT_MBPS
        program._host_mbps = chosen  # not part of the program's format: chosen again after a load
    return chosen


def choose(program: BoardProgram, timed_board: TimedBoard) -> float:
    """The first rate of CANDIDATE_MBPS (Mbit/s) at which :func:`probe` predicts no drop. When
    every rate drops packets, the fastest of those with the fewest drops, with a warning: a
    slower host then does not help (the drops come from inside the board, e.g. several
    cores sending to one at once), and it would only cost throughput. Every rate is tried
    until one is drop-free: drops need not fall as the host slows (they depend on how the
    samples' bursts meet inside the board)."""
    drops = {}
    for mbps in CANDIDATE_MBPS:
        drops[mbps] = probe(program, timed_board, mbps)
        if drops[mbps] == 0:
            if mbps < DEFAULT_MBPS:
                log.info("%s: host link paced to %g Mbit/s (faster, a board would drop packets)", program.name, mbps)
            return mbps
    fewest = min(drops.values())
    mbps = next(m for m in CANDIDATE_MBPS if drops[m] == fewest)
    log.warning("%s: a board would drop packets (%d in %d samples at the host link's %g Mbit/s, no fewer at "
                "slower rates); its samples may come back lost on a board (the emulator loses none)",
                program.name, fewest, PROBE_GROUPS * program.n_slots * max(1, program.replicas), mbps)
    return mbps
