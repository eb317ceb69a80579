"""The timed emulation's board model and what a timed run reports.

The emulator (``c_runtime/emulator/timing.c``) gives every packet event a time; these
are the figures it is given. All are MODELLED, none is measured on a board:

- **Cores**: the calibrated cycles of :mod:`tvm_spinn.tiling.cycle_model` (ARM instruction
  traces of our kernels) at 200 MHz (:data:`CLOCK_HZ`). A packet pays a spin1 user event
  when its core has been idle for longer than the binding's drain waits for a next packet
  (``cycle_model.drain_poll_cycles``, traced: about 10 us).
- **Routers**: :data:`HOP_NS` per hop (about 0.1 us, the figure the SpiNNaker papers
  quote for a router hop), one packet per router clock of 133 MHz (:data:`ROUTER_NS`, an
  assumption: the router pipeline takes a packet per cycle). A packet that waits longer
  than :data:`WAIT_NS` for a blocked output (a link or a core's FIQ) is one a board would
  drop: spinnaker_tools 7.4.1 sets the router's ``wait1`` field to 0x40 (``sark_hw.c``:
  ``rtr[RTR_CONTROL] = 0x00400001``), 240 router cycles by the 8-bit float encoding
  front-end-common decodes (``reinjection_status._decode_router_timeout_value``), and
  ``wait2`` to 0; emergency routing is not modelled.
- **Links**: 250 Mbit/s per chip-to-chip link, 72 bits per packet with payload, 40 without.
- **Between boards** (a machine of several boards, e.g. ``board="spinn5x3"``): a chip link
  that leaves its board ends at one of the board's three Spartan-6 FPGAs, which multiplex
  the 8 chip links of a board edge onto one high-speed serial link (spI/O's
  ``hss_multiplexer``: eight streams per serial link; ``designs/spinnaker_fpgas``: one SATA
  socket per board edge). The chip's side is the same 250 Mbit/s link; the serial link is
  modelled at :data:`BOARD_LINK_BITS_PER_S` (3.0 Gbit/s with 8b/10b coding, the rate spI/O
  documents for the SpiNN-5's -3 grade FPGAs; frame headers and credits ignored), shared by
  the edge's 8 links, plus :data:`BOARD_LATENCY_NS` per crossing (an ASSUMPTION for two FPGA
  pipelines and the cable: no published figure was at hand). The FPGA-to-chip side is
  not a separate server (it runs at least as fast as the chip's side).
- **Host in**: EIEIO messages of 31 key+payload events (12 bytes of EIEIO and SDP
  headers beside them) at the rate the runtime paces to (``TVM_SPINN_LINK_MBPS``, 32 Mbit/s
  by default), no faster than the 5 MB/s low end of the 5-10 MB/s measured into a board
  (SpiNN-misc-Tests t0-sdp). The input source core (front-end-common's reverse IP tag
  multicast source) sends each event in :data:`IN_CORE_CYCLES` cycles: our traced cost
  of a send (tools/arm_cycles.py) plus 40 cycles of EIEIO parsing, an estimate.
- **Host out**: front-end-common's live packet gatherer (``live_packet_gather.c``) buffers
  32 key+payload events (256 bytes) and flushes when full or on its timer tick (the
  toolchain's 1,000 us time step); it takes :data:`LPG_CYCLES` per packet (the traced
  FIQ and drain of our own binding, an estimate of its similar FIQ-queue path). Messages
  leave at 5.7 MiB/s from an Ethernet chip, 1.1 MiB/s from other chips (measured out of a
  board, SpiNN-misc-Tests, from chip (0, 0) and from others: on a machine of several boards
  every board's Ethernet chip (tiling.resources.Board.ethernet_chips) counts as chip (0, 0)
  of its board). The host sends each live input through the Ethernet of the board the
  input's source core sits on, one paced stream per board (the runtime paces each board's
  messages on their own, :mod:`tvm_spinn.runtime.board.live_io`): copies of a model on
  three boards take their inputs over three host links side by side. The streams share
  nothing on the host's side (its own network interface is not modelled).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..machine.graph import LOST_TIMEOUT_TICKS
from ..tiling import cycle_model
from ..tiling import resources as res

CLOCK_HZ = res.CLOCK_HZ
PS_PER_CYCLE = 10 ** 12 // CLOCK_HZ
HOP_NS = 100.0
ROUTER_NS = 1e9 / 133e6
WAIT_NS = 240 * 1e9 / 133e6
LINK_BITS_PER_S = 250e6
BITS_PAYLOAD, BITS_NO_PAYLOAD = 72, 40
HOST_IN_MAX_BYTES_PER_S = 5e6
MIN_LINK_BITS_PER_S = 1e3  # below this the picosecond clock of a long run would overflow
IN_MSG_OVERHEAD_BYTES = 2 + 2 + 8  # EIEIO header, SDP padding and header
EVENTS_PER_IN_MSG = 31
OUT_MSG_OVERHEAD_BYTES = 2  # EIEIO header (strip_sdp)
EVENTS_PER_OUT_MSG = 32  # live_packet_gather.c: BUFFER_CAPACITY 256 bytes / 8 per event
TICK_S = 1e-3
HOST_OUT_BYTES_PER_S_ETHERNET_CHIP = 5.7 * 2 ** 20
HOST_OUT_BYTES_PER_S_OTHER_CHIP = 1.1 * 2 ** 20
BOARD_LINK_BITS_PER_S = 3.0e9 * 8 / 10  # an FPGA's serial link, 8b/10b coded
BOARD_LATENCY_NS = 1000.0  # an assumption (module docstring)
COST_FIELDS = ("fiq", "event", "receive", "mac", "block", "output", "packet_out", "compute", "start", "lookup",
               "scan")  # SPINN_COST_*
# then SPINN_COST_SEND_GAP and _PHASE: a core's send pace (machine.send_gaps), not costs of the model

# core kinds (spinn_emulator.h SPINN_CORE_*) and the config words that tell variants apart
_DENSE_TILE, _DENSE_REDUCE, _CONV, _POOL, _ADD, _CONV_REDUCE = 1, 2, 4, 5, 6, 7
_DENSE_BLOCK_WORD = 4  # spinn_dense.h: the int32 block length (2: accumulate in int64)


def host_in_bytes(n_packets: int) -> int:
    """Bytes the runtime sends (paced) for one sample of n_packets key + payload events
    (BoardProgram.input_packets: int16 pairs, or 8-bit quads): 8 per event,
    IN_MSG_OVERHEAD_BYTES per EIEIO message of EVENTS_PER_IN_MSG."""
    return n_packets * 8 + -(-n_packets // EVENTS_PER_IN_MSG) * IN_MSG_OVERHEAD_BYTES


def program_in_bytes(program) -> float:
    """Bytes the runtime sends per sample of a BoardProgram: each live input's packets in
    its own EIEIO messages (host_in_bytes), copies of the function sharing a sample's share."""
    total = sum(host_in_bytes(inp.packets(program.in_features)) for inp in program.inputs)
    return total / max(1, program.replicas)


def host_out_bytes(n_values: int) -> int:
    """Bytes the live packet gatherer sends for one sample's n_values results (full messages)."""
    pairs = (n_values + 1) // 2
    return pairs * 8 + -(-pairs // EVENTS_PER_OUT_MSG) * OUT_MSG_OVERHEAD_BYTES


def host_out_bytes_per_s(gatherer_chip: Tuple[int, int], ethernet_chips: Sequence[Tuple[int, int]] = ((0, 0),)
                         ) -> float:
    """The measured rate out of a board from the gatherer's chip (bytes/s): the fast one on
    an Ethernet chip (``ethernet_chips``: the machine's, default one board's (0, 0))."""
    on_ethernet = tuple(gatherer_chip) in {tuple(c) for c in ethernet_chips}
    return HOST_OUT_BYTES_PER_S_ETHERNET_CHIP if on_ethernet else HOST_OUT_BYTES_PER_S_OTHER_CHIP


def ethernet_chips(board_name: str) -> Tuple[Tuple[int, int], ...]:
    """The Ethernet chips of the machine a program was built for (BoardProgram.board); a
    program of an unknown machine: one board's (0, 0)."""
    machine = res.board_named(board_name)
    return machine.ethernet_chips if machine else ((0, 0),)


def board_links(board: Optional[res.Board], chips: Sequence[Tuple[int, int]],
                links: Dict[Tuple[int, int, int], Tuple[int, int]]) -> Tuple[np.ndarray, List[str]]:
    """The board-to-board serial link each chip link crosses: int32 (len(chips) * 6,) index
    into the returned names ("board x,y:l": the board of Ethernet chip (x, y), its edge in
    direction l), -1 for a link within a board. None or a one-board machine: all -1."""
    index = {tuple(c): i for i, c in enumerate(chips)}
    serial = np.full(len(chips) * 6, -1, np.int32)
    names: List[str] = []
    if board is None or board.boards == 1:
        return serial, names
    by_name: Dict[str, int] = {}
    for (x, y, link), (x2, y2) in links.items():
        here = board.ethernet_chip_of(x, y)
        if here != board.ethernet_chip_of(x2, y2):
            name = f"board {here[0]},{here[1]}:{link}"
            serial[index[(x, y)] * 6 + link] = by_name.setdefault(name, len(by_name))
    names = sorted(by_name, key=by_name.get)
    return serial, names


def input_hosts(board: Optional[res.Board], input_chips: Sequence[Tuple[int, int]]
                ) -> Tuple[np.ndarray, List[str]]:
    """The host-in stream of each live input (the board whose Ethernet it enters by): uint32
    (len(input_chips),) index into the returned names ("host in board x,y": the board's
    Ethernet chip). None or a one-board machine: every input on stream 0, no names."""
    hosts = np.zeros(len(input_chips), np.uint32)
    if board is None or board.boards == 1:
        return hosts, []
    for i, (x, y) in enumerate(input_chips):
        hosts[i] = board.ethernet_chips.index(board.ethernet_chip_of(x, y))
    return hosts, [f"host in board {x},{y}" for x, y in board.ethernet_chips]


def core_kind(kind: int, config: Sequence[int]) -> str:
    """The cycle model's kind (tiling.cycle_model.KINDS) of a kernel core from its core kind
    (spinn_emulator.h) and config words. Raises ValueError for a kind without a model."""
    from ..machine.configs.tensor import CONV_DEPTHWISE_WORD

    if kind == _DENSE_TILE:
        return "dense_tile_i64" if int(config[_DENSE_BLOCK_WORD]) == 2 else "dense_tile_i32"
    if kind == _CONV:
        return "conv_tile_depthwise" if int(config[CONV_DEPTHWISE_WORD]) else "conv_tile"
    names = {_DENSE_REDUCE: "dense_reduce", _POOL: "pool_tile", _ADD: "add_tile", _CONV_REDUCE: "conv_reduce"}
    if kind not in names:
        raise ValueError(f"no cycle model for core kind {kind}")
    return names[kind]


def core_cost_ps(kind: int, config: Sequence[int], send_gap: int = 0, send_phase: int = 0) -> np.ndarray:
    """uint64 (13,) ps per unit of work (SPINN_COST_* order) of a kernel core, then its send
    gap and phase (cycles: the least time between two of its packets, and its wait at its
    first send after being idle: machine.send_gaps). A packet in costs the FIQ and the
    receive's fast path; ``start`` is the extra of each packet the kernel counts on its
    general receive path (``rx_general``), ``lookup`` and ``scan`` those of each packet whose
    receive entry it looked up (``rx_lookups``) and of each entry compared (``rx_scanned``),
    charged as they happen."""
    name = core_kind(kind, config)
    c = cycle_model.cost(name)
    cycles = {f: getattr(c, f) for f in COST_FIELDS}
    return np.array([round(cycles[f] * PS_PER_CYCLE) for f in COST_FIELDS] + [send_gap * PS_PER_CYCLE, send_phase * PS_PER_CYCLE],
                    np.uint64)


def host_in_bytes_per_s(mbps: Optional[float] = None) -> float:
    """The modelled host-to-board rate (bytes/s): the runtime's pacing, ``mbps`` Mbit/s of UDP
    payload (default: TVM_SPINN_LINK_MBPS, else resources.HOST_IN_BYTES_PER_S; a program's own
    pace: runtime.pacing.host_mbps), at most the measured low end."""
    from ..errors import BoardError
    from .pacing import explicit_mbps, DEFAULT_MBPS

    bits = (mbps if mbps is not None else explicit_mbps() or DEFAULT_MBPS) * 1e6
    if bits < MIN_LINK_BITS_PER_S:
        raise BoardError(f"TVM_SPINN_LINK_MBPS={bits / 1e6:g} is below the {MIN_LINK_BITS_PER_S / 1e6:g} the "
                         "timed emulation models: set a rate in megabits per second (default 32)")
    return min(bits / 8.0, HOST_IN_MAX_BYTES_PER_S)


def params(gatherer_chip: Tuple[int, int], on: bool = True,
           ethernet_chips: Sequence[Tuple[int, int]] = ((0, 0),), host_mbps: Optional[float] = None) -> np.ndarray:
    """uint64 (20,) SPINN_TM_* parameters of the timed emulation (picoseconds); host_mbps: the
    host link's pace (Mbit/s; default: host_in_bytes_per_s's)."""
    out_rate = host_out_bytes_per_s(gatherer_chip, ethernet_chips)
    p = [1 if on else 0, HOP_NS * 1e3, ROUTER_NS * 1e3, WAIT_NS * 1e3, 1e12 / LINK_BITS_PER_S,
         1e12 / host_in_bytes_per_s(host_mbps), 1e12 / out_rate, IN_MSG_OVERHEAD_BYTES, OUT_MSG_OVERHEAD_BYTES,
         EVENTS_PER_IN_MSG, EVENTS_PER_OUT_MSG, TICK_S * 1e12, LPG_CYCLES * PS_PER_CYCLE,
         IN_CORE_CYCLES * PS_PER_CYCLE, BITS_PAYLOAD, BITS_NO_PAYLOAD, LOST_TIMEOUT_TICKS * TICK_S * 1e12,
         1e12 / BOARD_LINK_BITS_PER_S, BOARD_LATENCY_NS * 1e3, cycle_model.drain_poll_cycles() * PS_PER_CYCLE]
    return np.array([round(v) for v in p], np.uint64)


LPG_CYCLES = round(cycle_model.gatherer_cycles())
IN_CORE_CYCLES = round(cycle_model.input_core_cycles())


@dataclass
class TimedRun:
    """What a timed emulation of one call says (all times MODELLED).

    latency_s: mean time from a sample's first byte leaving the host to its last result
    arriving there (s); throughput_per_s: samples / the run's duration (the last result at
    the host); utilisation: busy time / the time until the last resource fell idle, per resource ("core <label>", "link <x,y>:<l>", "router <x,y>",
    "host in", "host out", "gatherer", "input cores"); bottleneck: the most used one, or
    "sample window (...)" when none is 80% busy (the host waits on results, n_slots in flight);
    would_drop: packets a board would drop (waiting beyond the router's limit at a core,
    a link or the gatherer; a core's receive ring full); would_time_out: partly received
    samples a core would release as lost (a gap longer than the binding's lost-sample
    timeout, machine.graph.LOST_TIMEOUT_TICKS, between two of their packets)."""

    samples: int
    duration_s: float
    latency_s: float
    latency_first_s: float
    throughput_per_s: float
    bottleneck: str
    bottleneck_utilisation: float
    would_drop: Dict[str, int] = field(default_factory=dict)
    utilisation: Dict[str, float] = field(default_factory=dict)
    messages_in: int = 0
    messages_out: int = 0
    would_time_out: int = 0
    bytes_in: int = 0  # counted: the EIEIO messages' bytes the host sent (headers included)

    @property
    def predicted_drops(self) -> int:
        return int(sum(self.would_drop.values()))

    def top(self, n: int = 5) -> List[Tuple[str, float]]:
        return sorted(self.utilisation.items(), key=lambda kv: -kv[1])[:n]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["predicted_drops"] = self.predicted_drops
        return d


def _kind_of_resource(name: str) -> str:
    if name.startswith(("sample window", "latency")):
        return "window"
    return "core" if name.startswith(("core", "gatherer", "input")) else "link" if name.startswith(
        ("link", "router")) else "host"


# Below this share of busy time for every resource, a run is bound by its sample window.
WINDOW_BOUND_UTILISATION = 0.8


def summarise(samples: int, t_start: np.ndarray, t_done: np.ndarray, totals: np.ndarray,
              core_busy: Dict[str, float], core_late: Dict[str, int], core_ring: Dict[str, int],
              link_busy: Dict[str, float], link_late: int, router_busy: Dict[str, float],
              n_slots: int = 4, replicas: int = 1, n_samples: Optional[int] = None,
              host_in_busy: Optional[Dict[str, float]] = None) -> TimedRun:
    """A TimedRun from the emulator's timing words (ps; see spinn_emulator.h); n_slots: the
    samples the host keeps in flight (when no resource is near full, the window binds).
    ``samples`` are the board's: with copies of a model (``replicas``), groups of one sample
    per copy; ``n_samples``: the caller's samples (default ``samples``), which the run's
    samples, throughput and bottleneck text count. host_in_busy: busy ps of each host-in
    stream of a machine of several boards ("host in board x,y"; "host in" is then the
    busiest one's, and names the bottleneck by board)."""
    n_samples = samples if n_samples is None else int(n_samples)
    duration = float(totals[0]) * 1e-12
    horizon = float(totals[11]) * 1e-12  # utilisation: over all the time anything was busy
    lat = (t_done.astype(np.float64) - t_start.astype(np.float64)) * 1e-12 if samples else np.zeros(0)
    util: Dict[str, float] = {}
    if horizon > 0:
        util["host in"] = float(totals[1]) * 1e-12 / horizon
        util["host out"] = float(totals[2]) * 1e-12 / horizon
        util["gatherer"] = float(totals[3]) * 1e-12 / horizon
        util["input cores"] = float(totals[4]) * 1e-12 / horizon
        for name, busy in (host_in_busy or {}).items():
            util[name] = busy * 1e-12 / horizon
        for name, busy in core_busy.items():
            util[f"core {name}"] = busy * 1e-12 / horizon
        for name, busy in link_busy.items():
            util[f"link {name}"] = busy * 1e-12 / horizon
        for name, busy in router_busy.items():
            util[f"router {name}"] = busy * 1e-12 / horizon
    bottleneck, top = max(util.items(), key=lambda kv: kv[1]) if util else ("", 0.0)
    if bottleneck == "host in" and host_in_busy:  # which board's link
        bottleneck = max(host_in_busy, key=host_in_busy.get)
    if top < WINDOW_BOUND_UTILISATION:
        # nothing is near full: the host waits for results, n_slots samples in flight at a time
        window = f"{n_slots} in flight" if replicas == 1 else f"{n_slots} groups of {replicas} copies in flight"
        bottleneck = (f"sample window ({window}; busiest: {bottleneck})" if samples > n_slots else
                      f"latency ({n_samples} sample(s), all in flight; busiest: {bottleneck})")
    would_drop = {"at cores (router wait)": int(sum(core_late.values())),
                  "core receive ring full": int(sum(core_ring.values())),
                  "at links (router wait)": int(link_late), "at the gatherer": int(totals[8])}
    return TimedRun(samples=n_samples, duration_s=duration, latency_s=float(lat.mean()) if lat.size else 0.0,
                    latency_first_s=float(lat[0]) if lat.size else 0.0,
                    throughput_per_s=n_samples / duration if duration > 0 else float("inf"),
                    bottleneck=bottleneck, bottleneck_utilisation=top, would_drop=would_drop, utilisation=util,
                    messages_in=int(totals[9]), messages_out=int(totals[10]), would_time_out=int(totals[12]),
                    bytes_in=int(totals[13]) if len(totals) > 13 else 0)


def bottleneck_class(run: Optional[TimedRun]) -> str:
    """"core", "link", "host" or "window" (the samples in flight): what binds a timed run."""
    return _kind_of_resource(run.bottleneck) if run and run.bottleneck else ""
