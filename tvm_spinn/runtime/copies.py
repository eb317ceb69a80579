"""How many copies ``replicas="auto"`` maps: the count with the best modelled throughput.

More copies of a model are not always faster: they share the host link and the Ethernet
chip's router, and the host pace that keeps a board from dropping packets
(:mod:`tvm_spinn.runtime.pacing`) can be slower with more of them (ResNet-8: 265/s with two
copies, 191/s with three, the most that fit). So the build maps a few copy counts
(:func:`candidates`), and for each runs the timed emulation of each offloaded function
(the model's rate: :func:`model_run`): the pace search, then
:data:`SAMPLES` samples of zeros at that pace (the packets a sample sends do not depend on
its values; the same number for every count, so that the pipeline's filling weighs alike:
a short run favours more copies). It keeps the count with the highest throughput, the
fewest copies among those within :data:`TIE` of it (fewer cores for the same rate), of the
counts whose run predicts no dropped packet if there are any (the pace search streams
fewer samples). All figures are MODELLED (the timed emulation), not measured on a board.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, List, Sequence, Tuple

import numpy as np

from ..errors import EmulatorError, LostSamplesError
from ..program.board import BoardProgram
from . import pacing

log = logging.getLogger("tvm_spinn")

SAMPLES = 128  # samples a throughput run streams (at least GROUPS sample windows)
GROUPS = 4  # sample windows (n_slots samples per copy each)
TIE = 0.02  # counts within this share of the best throughput tie: the fewest copies wins


def _halving(most: int) -> List[int]:
    """most, then halved (rounding up) down to one: 16, 8, 4, 2, 1; 5, 3, 2, 1."""
    out, n = [most], most
    while n > 1:
        n = (n + 1) // 2
        out.append(n)
    return out


def candidates(most: int, boards: int = 1) -> List[int]:
    """Copy counts to try, most first: the most that fit, then halving down to one (16: 16,
    8, 4, 2, 1; 3: 3, 2, 1); on several boards also the multiples of the board count that
    split the copies evenly over them (16 on 3 boards: also 15, 9, 6, 3: with 16 the boards
    hold 6, 5 and 5, and board 0's host link binds)."""
    out = set(_halving(most))
    if boards > 1 and most >= boards:
        out |= {boards * k for k in _halving(most // boards)}
    return sorted(out, reverse=True)


def timed_run(program: BoardProgram) -> Tuple[float, int]:
    """(samples per second, packets a board would drop) of ``program`` (its copies together)
    in a timed emulation of SAMPLES samples at its host pace (chosen here, and kept on the
    program as the runtime would choose it: the pace search streams fewer samples, so a
    longer run may still predict drops). Raises what the emulator raises (EmulatorError)
    for a program that cannot run zeros."""
    from .emulator import EmulatedBoard

    def timed(rate: float) -> EmulatedBoard:
        return EmulatedBoard(program, timed=True, host_mbps=rate)

    copies = max(1, program.replicas)
    n = max(SAMPLES, GROUPS * program.n_slots * copies)
    x = np.zeros((-(-n // copies) * copies, program.in_features), np.int16)
    with _quiet():  # the pace search's warnings: the kept program's come again when it runs
        mbps = pacing.host_mbps(program, timed)
        board = timed(mbps)
        board.run(x)
    return float(board.last_timed.throughput_per_s), int(board.last_timed.predicted_drops)


@contextmanager
def _quiet():
    """tvm_spinn's log at ERROR and above only, meanwhile."""
    level = log.level
    log.setLevel(max(logging.ERROR, log.getEffectiveLevel()))
    try:
        yield
    finally:
        log.setLevel(level)


def model_run(programs: Sequence[BoardProgram]) -> Tuple[float, int]:
    """(samples per second, packets a board would drop) of a whole model: each of its
    programs in :func:`timed_run`, run one after another a sample (a program called k times
    an inference counts k times): 1 / sum(calls / rate), and their drops together."""
    seconds, drops = 0.0, 0
    for p in programs:
        rate, d = timed_run(p)
        seconds += max(1, p.calls_per_inference) / rate if rate > 0 else float("inf")
        drops += d
    return (1.0 / seconds if seconds > 0 else 0.0), drops


def modelled_throughput(program: BoardProgram) -> float:
    """Samples per second of ``program`` in :func:`timed_run`."""
    return timed_run(program)[0]


def best(tried: Sequence[Tuple[int, float, int]]) -> int:
    """The copy count to keep of ``tried`` ((copies, modelled samples/s or -1 when not
    timed, packets a board would drop), at least one): of the timed counts without drops if
    any, else of the timed ones, the fewest copies within TIE of the highest throughput;
    the first count when none was timed."""
    timed = [t for t in tried if t[1] >= 0]
    if not timed:
        return tried[0][0]
    pool = [t for t in timed if t[2] == 0] or timed
    top = max(rate for _, rate, _ in pool)
    return min(n for n, rate, _ in pool if rate >= (1.0 - TIE) * top)


def choose(build: Callable[[int], List[BoardProgram]], most: int, boards: int = 1
           ) -> Tuple[int, List[BoardProgram]]:
    """(copies, programs) of the count with the best modelled throughput among
    :func:`candidates` (``most``, ``boards``): build(n) maps n copies (raising MappingError
    or ResourceError, or returning None, when they do not fit: that count is skipped). The
    throughput of a build is the whole model's (:func:`model_run`). A build the emulator
    cannot run counts as the slowest (the most copies that map are kept when none runs).
    Raises the last build error when no count maps."""
    from ..codegen.codegen import mapped_counts

    built, tried = {}, []
    for n, programs in mapped_counts(build, candidates(most, boards)):
        built[n] = programs
        try:
            tried.append((n, *model_run(programs)))
        except (EmulatorError, LostSamplesError) as exc:
            log.debug("replicas='auto': %d copies not timed (%s)", n, exc)
            tried.append((n, -1.0, 0))
    n = best(tried)
    log.info("replicas='auto': %s (modelled samples/s, timed emulation): kept %d %s", ", ".join(
        f"{k} {'copy' if k == 1 else 'copies'} " + (f"{rate:,.0f}/s" if rate >= 0 else "not timed")
        + (f" ({drops} drops)" if drops else "") for k, rate, drops in tried), n, "copy" if n == 1 else "copies")
    return n, built[n]
