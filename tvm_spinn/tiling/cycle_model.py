"""The calibrated cycle model: ARM968E-S cycles of each kernel kind's counted work.

Every constant is fitted to instruction traces of the kernels built as the ``.aplx``
build compiles them (``tools/calibrate_cycles.py`` runs ``tools/arm_cycles.py`` on a fit
set of tiles and writes ``cycle_calibration.json`` beside this file); a test checks the
model against fresh traces of other tiles (within 15%). They are costs of ARM code under
ARM9E-S instruction timings, not measurements on a board.

A kernel kind's work, in the units its kernel counts (``spinn_counters_t``):

- per packet in: ``fiq`` (spin1's FIQ handler and the binding's queue push) and
  ``receive`` (the binding's drain taking it from the queue, and the kernel's receive),
  plus ``lookup`` per packet whose receive entry the kernel looks up (it counts them,
  ``rx_lookups``: a packet of another producer's row than the last packet's, one completing
  an input row, an odd row's half pair, 8-bit values) and ``scan`` per entry such a lookup
  compares the key with (``rx_scanned``), and ``start`` per packet that takes the
  receive's general, longer path (``rx_general``: a producer's first packet of a run, any
  of a row its entry's row does not lead to: none a sample for the planner, whose estimate
  of the lookups is :func:`receive_lookups`); per user event
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
    lookup: float
    scan: float

    @property
    def packet_in(self) -> float:
        """Cycles per packet in (in the FIQ) on the receive's short path."""
        return self.fiq + self.receive

    def packet_in_among(self, senders: int, entries: int) -> float:
        """Mean cycles per packet in (in the FIQ) with ``senders`` sending at once to a core of
        ``entries`` receive entries: the fast path, and the entry lookups a share of them take
        (:data:`LOOKUP_SHARE` when several send at once; ``lookup`` and ``scan`` are 0 for the
        kernels without rows)."""
        share = LOOKUP_SHARE if senders > 1 else 0.0
        return self.packet_in + share * (self.lookup + self.scan * mean_scan(entries))

    def cycles(self, *, macs: float = 0, blocks: float = 0, outputs: float = 0, packets_in: float = 0,
               packets_out: float = 0, computes: float = 0, events: float = 0, starts: float = 0,
               lookups: float = 0, scanned: float = 0) -> float:
        """Cycles of the counted work; events: user events (computes made due while the core
        was idle); starts: packets in that take the receive's longer path; lookups: packets in
        whose receive entry was looked up, scanned: the entries those lookups compared."""
        return (packets_in * self.packet_in + starts * self.start + lookups * self.lookup + scanned * self.scan
                + events * self.event + macs * self.mac + blocks * self.block + outputs * self.output
                + packets_out * self.packet_out + computes * self.compute)

    def as_list(self) -> Sequence[float]:
        return [getattr(self, f.name) for f in fields(self)]


# The share of a tensor kernel's packets in whose receive entry it looks up when several
# producers send at once, for the send gaps (which do not know the rows): the most of the
# zoo's timed runs (batch 32: ResNet-8 14%, DS-CNN 17%, LeNet-5 6%, the packets of rows
# other cores read included). The planner counts rows instead (:func:`receive_lookups`).
LOOKUP_SHARE = 0.2


def mean_scan(entries: int) -> float:
    """Entries a lookup compares the key with, on average, in a table of ``entries``
    (spinn_trx_match: the first that matches, in table order)."""
    return (entries + 1) / 2.0 if entries > 0 else 0.0


def receive_lookups(rows: float, senders: int, entries: int) -> float:
    """Packets a sample whose receive entry a tensor kernel looks up, with ``rows`` input rows
    (of all its inputs, all channels of a row one) from ``senders`` producers through
    ``entries`` receive entries: each producer's move to its next row, the packet completing
    a row and each entry's first packet of a sample. The packets of producers sending at
    once find their entry's row through the receive's map (spinn_tensor.h
    spinn_trx_rows_t) without a lookup, but for entries that share a slot of it."""
    return rows * (senders + 1) + entries


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

