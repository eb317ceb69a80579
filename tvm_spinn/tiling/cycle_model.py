"""The calibrated cycle model: ARM968E-S cycles of each kernel kind's counted work.

Every constant is fitted to instruction traces of the kernels built as the ``.aplx``
build compiles them (``tools/calibrate_cycles.py`` runs ``tools/arm_cycles.py`` on a fit
set of tiles and writes ``cycle_calibration.json`` beside this file); a test checks the
model against fresh traces of other tiles (within 15%). They are costs of ARM code under
ARM9E-S instruction timings, not measurements on a board.

A kernel kind's work, in the units its kernel counts (``spinn_counters_t``):

- per packet in: ``fiq`` (the FIQ handler), ``receive`` (the binding's drain and the
  kernel's receive), and ``event`` (spin1 scheduling the user event) when the packet finds
  the core idle; a busy core drains several packets per event;
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
    mac: float
    block: float
    output: float
    packet_out: float
    compute: float

    @property
    def packet_in(self) -> float:
        """Cycles per packet in on a busy core (the user event amortised away)."""
        return self.fiq + self.receive

    def cycles(self, *, macs: float = 0, blocks: float = 0, outputs: float = 0, packets_in: float = 0,
               packets_out: float = 0, computes: float = 0, events: float = 0) -> float:
        """Cycles of the counted work; events: user events (packets that found the core idle)."""
        return (packets_in * self.packet_in + events * self.event + macs * self.mac + blocks * self.block
                + outputs * self.output + packets_out * self.packet_out + computes * self.compute)

    def as_list(self) -> Sequence[float]:
        return [getattr(self, f.name) for f in fields(self)]


@lru_cache(maxsize=None)
def calibration(path: Path = CALIBRATION) -> dict:
    """The calibration file: {"kinds": {kind: {field: cycles}}, "source": ...}.

    Raises CalibrationError when it is missing or lacks a kind or a field."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CalibrationError(f"cannot read the cycle calibration {path}: {e}; "
                               "regenerate it with `python tools/calibrate_cycles.py`") from e
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
