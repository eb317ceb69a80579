"""The calibrated cycle model: ARM968E-S cycles of each kernel kind's counted work.

Every constant is fitted to instruction traces of the kernels built as the ``.aplx``
build compiles them (``tools/calibrate_cycles.py`` runs ``tools/arm_cycles.py`` on a fit
set of tiles and writes ``cycle_calibration.json`` beside this file); a test checks the
model against fresh traces of other tiles (within 15%). They are costs of ARM code under
ARM9E-S instruction timings, not measurements on a board.

A kernel kind's work, in the units its kernel counts (``spinn_counters_t``):

- per packet in: ``fiq`` (spin1's FIQ handler and the binding's queue push) and
  ``receive`` (the binding's drain taking it from the queue, and the kernel's receive),
  plus ``start`` per packet that takes the receive's general, longer path (the kernel
  counts them, ``rx_general``: the first of an input channel's block, the one completing an
  input row, and any whose row is not one of the rows the receive remembers; before a run,
  the planner's estimate is :func:`receive_starts`); per user event
  ``event`` (spin1 scheduling it, the FIQ raising it, the drain starting and ending), one
  per compute a packet made due while the core was idle: packets that come while the
  drain runs or waits for a next one share it (fitted to traces of both);
- per MAC ``mac``, per int32 block spilled ``block``, per output value ``output``, per
  compute call ``compute``, per packet sent ``packet_out``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Dict, Sequence

CALIBRATION = Path(__file__).resolve().parent / "cycle_calibration.json"

# kernel kinds of the model (tools/arm_cycles.py KINDS)
KINDS = ("dense_tile_i32", "dense_tile_i64", "dense_reduce", "conv_tile", "conv_tile_depthwise", "pool_tile",
         "add_tile", "conv_reduce")


class CalibrationError(RuntimeError):
    """The cycle calibration file is missing or malformed (run tools/calibrate_cycles.py)."""


@dataclass(frozen=True)
class KernelCost:
    """Cycles per unit of work of one kernel kind (see the module docstring)."""

    fiq: float
    event: float
    receive: float
    start: float
    mac: float
    block: float
    output: float
    packet_out: float
    compute: float

    @property
    def packet_in(self) -> float:
        """Cycles per packet in (in the FIQ) on the receive's short path."""
        return self.fiq + self.receive

    def packet_in_among(self, senders: int) -> float:
        """Mean cycles per packet in (in the FIQ) with ``senders`` sending at once: the fast
        path, and the longer one for the share their interleaved rows take
        (:func:`general_share`; ``start`` is 0 for the kernels without rows)."""
        return self.packet_in + self.start * general_share(senders)

    def cycles(self, *, macs: float = 0, blocks: float = 0, outputs: float = 0, packets_in: float = 0,
               packets_out: float = 0, computes: float = 0, events: float = 0, starts: float = 0) -> float:
        """Cycles of the counted work; events: user events (computes made due while the core
        was idle); starts: packets in that take the receive's longer path."""
        return (packets_in * self.packet_in + starts * self.start + events * self.event + macs * self.mac
                + blocks * self.block + outputs * self.output + packets_out * self.packet_out
                + computes * self.compute)

    def as_list(self) -> Sequence[float]:
        return [getattr(self, f.name) for f in fields(self)]


# Rows a tensor kernel's receive remembers (spinn_tensor.h SPINN_TRX_ROWS).
RECEIVE_ROWS = 8


def receive_starts(channels: int, inputs: int = 1) -> int:
    """Packets per sample that take a tensor kernel's longer receive path (spinn_tensor.h
    spinn_tensor_receive_rc) when its producers' rows come one after another: the first of
    each input channel's block (the rows after it, the one completing a row and an odd row's
    half pair included, take the fast path). A lower bound: rows of more producers than the
    receive remembers, interleaved, take it more often (:func:`general_share`; the kernels
    count them, ``rx_general``, and the statistics and the timed emulation charge those)."""
    return inputs * channels


def general_share(streams: int) -> float:
    """The share of a tensor kernel's packets in taken to take the receive's general path
    when ``streams`` producers send to it at once, their rows interleaved: none while the
    receive remembers a row of each (RECEIVE_ROWS), else all but RECEIVE_ROWS of every
    ``streams`` (a remembered row is replaced before its producer's next packet comes, for
    the others). Measured in the timed runs (rx_general): ResNet-8's last residual add, 36
    producers, 63% (this says 78%); its 3x3 convolutions, 16-32 producers, 7-25%, as their
    producers send in turns (this says 50-75%): an upper estimate."""
    return max(0.0, 1.0 - RECEIVE_ROWS / streams) if streams > 0 else 0.0


@lru_cache(maxsize=None)
def calibration(path: Path = CALIBRATION) -> dict:
    """The calibration file: {"kinds": {kind: {field: cycles}}, "source": ...}.

    Raises CalibrationError when it is missing or lacks a kind or a field."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CalibrationError(f"cannot read the cycle calibration {path}: {e}; "
                               "regenerate it with `python tools/calibrate_cycles.py`") from e
    if not isinstance(data.get("drain_poll_cycles"), (int, float)):
        raise CalibrationError(f"{path}: drain_poll_cycles missing; regenerate it with `python tools/calibrate_cycles.py`")
    names = [f.name for f in fields(KernelCost)]
    for kind in KINDS:
        entry = data.get("kinds", {}).get(kind)
        if entry is None or any(n not in entry for n in names):
            raise CalibrationError(f"{path}: kind {kind!r} missing or incomplete (fields {names}); "
                                   "regenerate it with `python tools/calibrate_cycles.py`")
    return data


def cost(kind: str) -> KernelCost:
    """The calibrated KernelCost of a kernel kind (one of :data:`KINDS`)."""
    entry = calibration()["kinds"][kind]
    return KernelCost(**{f.name: float(entry[f.name]) for f in fields(KernelCost)})


def costs() -> Dict[str, KernelCost]:
    return {k: cost(k) for k in KINDS}


def drain_poll_cycles() -> float:
    """Cycles the binding's drain waits for a next packet before it ends (spin1_binding.h
    spinn_binding_poll, traced): a packet within the wait costs no spin1 user event."""
    return float(calibration()["drain_poll_cycles"])


# front-end-common's live IO cores, which the send gaps and the timed emulation take as:
EIEIO_PARSE_CYCLES = 40  # an estimate: the multicast source's parsing of an EIEIO event


def input_core_cycles() -> float:
    """Cycles the live input core (front-end-common's reverse IP tag multicast source) takes
    to send a packet: our traced send and :data:`EIEIO_PARSE_CYCLES` (it is not our code)."""
    return cost("dense_tile_i32").packet_out + EIEIO_PARSE_CYCLES


def gatherer_cycles() -> float:
    """Cycles the live packet gatherer takes a packet in: as our dense tile's FIQ and drain
    (its FIQ-queue path is alike; not traced)."""
    return cost("dense_tile_i32").packet_in

