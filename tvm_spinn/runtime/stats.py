"""Per-call statistics: what the emulator counted and what the cycle model says.

Counts (packets, MACs, router and link traversals) are exact counts of the emulated
run. Cycles, latency and throughput are *modelled*, not measured on a board: by the
timed emulation (tvm_spinn.runtime.timing, the default), or with timing off by a formula
(each stage's slowest core, the host link) over the calibrated cycle model
(tvm_spinn.tiling.cycle_model).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from ..tiling import cycle_model
from ..tiling import resources as res
from . import pacing, timing
from .timing import HOP_NS, TimedRun, core_kind, host_in_bytes_per_s

_CORE = re.compile(r"\bcore ([\w.]+)")  # a core named in a resource: "core f1.L0_t1_0"

# Energy, from the toolchain's own model (spinn_machine 7.4.1: version/version_5.py and
# version/version_spin1.py, the figures front-end-common's energy report uses): an idle
# SpiNN-5 board 26.84 W ("Optimising the overall power usage on the SpiNNaker neuromimetic
# platform"), 0.034 W per active core over idle (31.88 W idle / 59.38 W with 806 cores
# active), 1 nJ per multicast packet per router (25 pJ/bit, 40-bit packets; the toolchain
# costs multicast packets at 40 bits even with a payload).
WATTS_BOARD_IDLE = 26.84
WATTS_PER_ACTIVE_CORE = 0.034
JOULES_PER_ROUTED_PACKET = 25e-12 * 40

# Provenance counters that mean something went wrong (the summary names them when non-zero).
TROUBLE_COUNTERS = ("dropped", "markers_in", "released", "lost_out", "rx_overflow", "send_failed", "compute_failed",
                    "fabric_dropped", "lost_at_stopped_cores", "router_dropped", "samples_timed_out",
                    "events_unknown_key", "datagrams_malformed")


def core_cycles(counters: Dict[str, int], kind: str) -> float:
    """Modelled cycles of a core's counted work (its spinn_counters_t, the packets on the
    receive's general path, ``rx_general``, and its entry lookups included), by the calibrated model of its kind
    (tiling.cycle_model.KINDS); a busy core: one user event per sample."""
    return cycle_model.cost(kind).cycles(
        macs=counters["macs"], blocks=counters["blocks"], outputs=counters["outputs"],
        packets_in=counters["packets_in"], packets_out=counters["packets_out"], computes=counters["computes"],
        events=counters["computes"], starts=counters.get("rx_general", 0), lookups=counters.get("rx_lookups", 0),
        scanned=counters.get("rx_scanned", 0))


@dataclass
class RunStatistics:
    """Statistics of one call (a batch of ``samples``)."""

    samples: int
    wall_seconds: float
    cores: int
    packets_injected: int  # host -> board packets, counted by the board where it counts them
    packets_sent_by_cores: int
    router_traversals: int
    link_traversals: int
    macs: int
    max_core_cycles_per_sample: float
    bottleneck_core: str
    modelled_latency_s: float
    modelled_throughput_per_s: float
    host_link_limit_per_s: float
    # modelled cycles per sample of each layer's slowest core, by the layer's name as the
    # user's model names it ("features.3 (Conv2d 16->32, 3x3)"; its reducers: "... reduce")
    layer_cycles_per_sample: Dict[str, float] = field(default_factory=dict)
    saturated_inputs: int = 0  # input values beyond the calibrated range (clipped to int16, or to an 8-bit input's range)
    # per tensor on the board (the op that computes it): values beyond its calibrated range
    saturated_values: Dict[str, int] = field(default_factory=dict)
    functions: int = 1  # offloaded functions these statistics cover
    # Provenance, summed over the kernel cores (on a board: read back from each core's
    # provenance region after the run; tvm_spinn.machine.graph.PROVENANCE_NAMES), plus the
    # board's own counts (board path: datagrams sent/lost, router drops; emulator: injected faults).
    provenance: Dict[str, int] = field(default_factory=dict)
    lost_samples: int = 0  # samples of the call that did not come back whole
    board: str = "the emulator"  # where the call ran
    copies: int = 1  # copies of the model on the machine (tvm_spinn.build(replicas=...))
    # MODELLED energy per inference at the modelled throughput (J): the board idling for one
    # sample's share of time, each core active for its modelled cycles, each routed packet.
    modelled_energy_j: float = 0.0
    modelled_energy_parts_j: Dict[str, float] = field(default_factory=dict)
    # The timed emulation of the call (None with timing off): latency and throughput above
    # come from it; bottleneck "core ...", "link ...", "host in" ...; packets a board would drop.
    timed: Optional[TimedRun] = None
    # kernel core label ("f1.L0_t1_0") -> the name of the layer it computes
    core_layers: Dict[str, str] = field(default_factory=dict)
    # packets per sample sent by each layer's cores (counted), by layer name
    layer_packets_per_sample: Dict[str, float] = field(default_factory=dict)
    # packets sent on each chip-to-chip link in the call (counted; the emulator only),
    # by "x,y:link" (link 0-5: E, NE, N, W, SW, S), links that carried none left out
    link_packets: Dict[str, int] = field(default_factory=dict)

    def describe_core(self, label: str) -> str:
        """A core label with its layer's short name: "L0_t1_0 of layer features.3" ("... of layer
        conv2d #2"; a layer of an nn.Sequential: "of layer 0")."""
        layer = self.core_layers.get(label)
        return f"{label} of layer {layer.split(' (')[0]}" if layer else label

    def describe_resource(self, resource: str) -> str:
        """A timed run's resource name ("core L0_t1_0", "link ...", "sample window (...; busiest:
        core L0_t1_0)") with the layer of every core it names."""
        return _CORE.sub(lambda m: f"core {self.describe_core(m.group(1))}", resource)

    @property
    def bottleneck(self) -> str:
        """What binds: the timed run's busiest resource, else the slowest core."""
        return self.timed.bottleneck if self.timed else f"core {self.bottleneck_core}"

    @property
    def predicted_drops(self) -> int:
        """Packets a board would drop in this call, by the timed emulation (0 with timing off)."""
        return self.timed.predicted_drops if self.timed else 0

    @property
    def saturated(self) -> int:
        """Every value clipped in the call: inputs (to int16 or their 8-bit range) and tensors on the board."""
        return self.saturated_inputs + sum(self.saturated_values.values())

    @property
    def deliveries_per_packet(self) -> float:
        """Packet arrivals at kernel cores per packet sent (by the host and the cores; those to
        the output gatherer count only here, in the denominator). Each arrival costs a core a
        packet interrupt, used or dropped: multicast partitions per set of readers keep it low."""
        return self.provenance.get("packets_in", 0) / max(1, self.packets_injected + self.packets_sent_by_cores)

    @property
    def packets_per_inference(self) -> float:
        return (self.packets_injected + self.packets_sent_by_cores) / max(1, self.samples)

    @property
    def emulator_samples_per_s(self) -> float:
        return self.samples / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["timed"] = self.timed.as_dict() if self.timed else None
        d["bottleneck"] = self.bottleneck
        d["predicted_drops"] = self.predicted_drops
        d["packets_per_inference"] = self.packets_per_inference
        d["deliveries_per_packet"] = self.deliveries_per_packet
        d["emulator_samples_per_s"] = self.emulator_samples_per_s
        return d

    def summary(self) -> str:
        how = "timed emulation" if self.timed else "formula"
        copies = f" ({self.copies} copies)" if self.copies > 1 else ""
        text = (f"{self.samples} samples on {self.cores} cores{copies} of {self.board}: "
                f"{self.packets_per_inference:.0f} packets/inference ({self.deliveries_per_packet:.2f} core "
                f"deliveries each), "
                f"modelled ({how}) latency {self.modelled_latency_s * 1e6:.0f} us, throughput "
                f"{self.modelled_throughput_per_s:.0f} samples/s "
                f"(bottleneck {self.describe_resource(self.bottleneck)}), "
                f"energy {self.modelled_energy_j * 1e3:.3g} mJ/inference; "
                f"wall time {self.wall_seconds:.3g} s")
        if self.predicted_drops:
            text += (f"; WARNING: a board would drop {self.predicted_drops} packets "
                     f"({', '.join(f'{k} {v}' for k, v in self.timed.would_drop.items() if v)})")
        if self.timed and self.timed.would_time_out:
            text += (f"; WARNING: cores would time out {self.timed.would_time_out} partly received samples "
                     "(longer than the lost-sample timeout between two of their packets)")
        trouble = {k: v for k, v in self.provenance.items() if v and k in TROUBLE_COUNTERS}
        if self.lost_samples or trouble:
            text += f"; {self.lost_samples} samples lost; " + ", ".join(f"{k} {v}" for k, v in trouble.items())
        return text


def _stage(label: str) -> str:
    """Pipeline stage of a kernel vertex: "L<i>" for a layer's tiles, "L<i> reduce" for its reducers
    (labels come from tvm_spinn.machine.builder: [f<k>.]L<i>_t<r>_<c> and [f<k>.]L<i>_r<r>)."""
    prefix, _, name = label.rpartition(".")
    layer, role = name.split("_", 1)
    # the copies of a function ("r<k>." in the prefix) run the same stages side by side
    prefix = ".".join(p for p in prefix.split(".") if p and not (p[0] == "r" and p[1:].isdigit()))
    stage = f"{prefix}.{layer}" if prefix else layer
    return stage if role.startswith("t") else f"{stage} reduce"


def _op_of(label: str) -> int:
    """Index of the op a kernel vertex computes ([f<k>.]L<i>_...)."""
    return int(label.rpartition(".")[2].split("_", 1)[0][1:])


def core_layers(program) -> Dict[str, str]:
    """Kernel core label -> the name of the layer (op) it computes, as the user's model
    names it (graph.extract.LayerNamer); empty for a program without its ops."""
    if not program.ops:
        return {}
    return {core.label: program.ops[_op_of(core.label)].name for core in program.cores}


def _stage_names(stages, layers: Dict[str, str]) -> Dict[str, str]:
    """Stage ("f1.L0", "f1.L0 reduce") -> "<layer name>[ reduce]"; the stages themselves when
    two layers share a name (a program whose ops were not named by one LayerNamer)."""
    by_layer = {_stage(label).partition(" ")[0]: name for label, name in layers.items()}
    names = {}
    for stage in stages:
        layer, _, role = stage.partition(" ")
        names[stage] = f"{by_layer[layer]} {role}".strip() if layer in by_layer else stage
    return names if len(set(names.values())) == len(names) else {s: s for s in stages}


def collect(program, board, samples: int, wall_seconds: float) -> RunStatistics:
    """Statistics of the run just made on ``board`` (counters reset before the run)."""
    counters = board.core_counters()
    provenance: Dict[str, int] = {}
    for c in counters.values():
        for key, value in c.items():
            provenance[key] = provenance.get(key, 0) + int(value)
    board_counts = getattr(board, "board_counters", None)
    if board_counts is not None:
        provenance.update(board_counts())
    layers = core_layers(program)
    saturated: Dict[str, int] = {}
    for label, c in counters.items():
        if c.get("saturated"):
            name = layers.get(label, label)
            saturated[name] = saturated.get(name, 0) + c["saturated"]
    chips, links = board.router_counters()
    n = max(1, samples)
    link_packets = {f"{x},{y}:{k}": int(links[i, k]) for i, (x, y) in enumerate(program.chips)
                    for k in range(links.shape[1]) if i < len(links) and links[i, k]}
    layer_packets: Dict[str, float] = {}
    for label, c in counters.items():
        name = layers.get(label, _stage(label))
        layer_packets[name] = layer_packets.get(name, 0.0) + c["packets_out"] / n
    kinds = {core.label: core_kind(core.kind, core.config) for core in program.cores}
    cycles = {label: core_cycles(c, kinds[label]) / n for label, c in counters.items()}
    bottleneck = max(cycles, key=cycles.get) if cycles else ""
    max_cycles = cycles.get(bottleneck, 0.0)
    # Latency: host transfer in, then each stage's slowest core (a layer's tiles, then
    # its reducers), packet hops between stages, host transfer out.
    per_stage: Dict[str, float] = {}
    for label, cyc in cycles.items():
        per_stage[_stage(label)] = max(per_stage.get(_stage(label), 0.0), cyc)
    sent = sum(c["packets_out"] for c in counters.values())
    # counted where the board counts them (a partial group of copies sends only its live copies')
    injected = int(provenance.pop("packets_injected", samples * program.input_packets()))
    hops_per_packet = float(links.sum()) / max(1, sent + injected)
    # the host link as the timed emulation models it (runtime.timing): in at the runtime's
    # pacing, out at the rate measured from the gatherer's chip
    # at the program's host pace when the timed run chose one (runtime.pacing), else the default
    in_s = timing.program_in_bytes(program) / host_in_bytes_per_s(pacing.chosen_mbps(program))
    out_s = timing.host_out_bytes(program.out_features) / timing.host_out_bytes_per_s(
        program.output.placement[:2], timing.ethernet_chips(program.board))
    latency = (in_s + out_s + sum(per_stage.values()) / res.CLOCK_HZ
               + (len(program.layers) + 1) * hops_per_packet * HOP_NS * 1e-9)
    host_limit = 1.0 / max(in_s, out_s)
    compute_limit = res.CLOCK_HZ / max_cycles if max_cycles > 0 else float("inf")
    throughput = min(host_limit, compute_limit)
    timed = getattr(board, "last_timed", None)
    if timed is not None and samples:
        latency, throughput = timed.latency_s, timed.throughput_per_s
    energy = energy_per_inference(1.0 / throughput, sum(cycles.values()), float(chips.sum()) / n)
    return RunStatistics(
        samples=samples, wall_seconds=wall_seconds, cores=program.n_cores, packets_injected=injected,
        packets_sent_by_cores=sent, router_traversals=int(chips.sum()), link_traversals=int(links.sum()),
        macs=sum(c["macs"] for c in counters.values()), max_core_cycles_per_sample=max_cycles,
        bottleneck_core=bottleneck, modelled_latency_s=latency,
        modelled_throughput_per_s=throughput, host_link_limit_per_s=host_limit,
        layer_cycles_per_sample={names[k]: v for names in [_stage_names(per_stage, layers)] for k, v in per_stage.items()},
        saturated_values=saturated, provenance=provenance, core_layers=layers,
        layer_packets_per_sample=layer_packets, link_packets=link_packets,
        lost_samples=int(provenance.get("lost_samples", 0)), board=str(getattr(board, "address", "the emulator")),
        modelled_energy_j=sum(energy.values()), modelled_energy_parts_j=energy, timed=timed,
        copies=max(1, int(program.replicas)))


def energy_per_inference(seconds_per_sample: float, core_cycles: float, routed_packets: float) -> Dict[str, float]:
    """MODELLED joules per inference by the toolchain's energy figures (see the constants):
    "board idle" (26.84 W for one sample's share of time, s), "cores" (0.034 W per core for
    its modelled cycles at 200 MHz), "packets" (1 nJ per router traversal)."""
    return {"board idle": WATTS_BOARD_IDLE * seconds_per_sample,
            "cores": WATTS_PER_ACTIVE_CORE * core_cycles / res.CLOCK_HZ,
            "packets": JOULES_PER_ROUTED_PACKET * routed_packets}


def combine(all_stats: List[RunStatistics]) -> RunStatistics:
    """Statistics of one call of a model whose offloaded functions run one after the other
    (e.g. split by a host softmax): counts and modelled latency add up (host time between
    functions excluded); the modelled throughput is limited by the slowest core of any
    function and by the host link, which every function's input and output share."""
    if len(all_stats) == 1:
        return all_stats[0]
    slowest = max(all_stats, key=lambda s: s.max_core_cycles_per_sample)
    host_limit = 1.0 / sum(1.0 / s.host_link_limit_per_s for s in all_stats)
    compute_limit = (res.CLOCK_HZ / slowest.max_core_cycles_per_sample
                     if slowest.max_core_cycles_per_sample > 0 else float("inf"))
    throughput = min(host_limit, compute_limit)
    timed = _combine_timed([s.timed for s in all_stats])
    if timed is not None:
        throughput = timed.throughput_per_s
    return RunStatistics(
        samples=all_stats[0].samples, wall_seconds=sum(s.wall_seconds for s in all_stats),
        cores=sum(s.cores for s in all_stats),
        packets_injected=sum(s.packets_injected for s in all_stats),
        packets_sent_by_cores=sum(s.packets_sent_by_cores for s in all_stats),
        router_traversals=sum(s.router_traversals for s in all_stats),
        link_traversals=sum(s.link_traversals for s in all_stats), macs=sum(s.macs for s in all_stats),
        max_core_cycles_per_sample=slowest.max_core_cycles_per_sample,
        bottleneck_core=slowest.bottleneck_core,  # labels of functions sharing a board carry "f<i>."
        modelled_latency_s=sum(s.modelled_latency_s for s in all_stats),
        modelled_throughput_per_s=throughput, host_link_limit_per_s=host_limit,
        layer_cycles_per_sample={k: v for s in all_stats for k, v in s.layer_cycles_per_sample.items()},
        saturated_inputs=sum(s.saturated_inputs for s in all_stats),
        saturated_values={k: v for s in all_stats for k, v in s.saturated_values.items()}, functions=len(all_stats),
        provenance={k: sum(s.provenance.get(k, 0) for s in all_stats) for k in
                    dict.fromkeys(k for s in all_stats for k in s.provenance)},
        lost_samples=max(s.lost_samples for s in all_stats), board=all_stats[0].board,
        copies=max(s.copies for s in all_stats),
        modelled_energy_j=sum(s.modelled_energy_j for s in all_stats),
        modelled_energy_parts_j={k: sum(s.modelled_energy_parts_j.get(k, 0.0) for s in all_stats)
                                 for k in all_stats[0].modelled_energy_parts_j}, timed=timed,
        core_layers={k: v for s in all_stats for k, v in s.core_layers.items()},
        layer_packets_per_sample={k: v for s in all_stats for k, v in s.layer_packets_per_sample.items()},
        link_packets={k: sum(s.link_packets.get(k, 0) for s in all_stats)
                      for k in dict.fromkeys(k for s in all_stats for k in s.link_packets)})


def _combine_timed(runs: List[Optional[TimedRun]]) -> Optional[TimedRun]:
    """The timed runs of functions run one after the other: durations and latencies add up,
    the bottleneck is the slowest function's, drops add up."""
    if any(r is None for r in runs):
        return None
    slowest = min(runs, key=lambda r: r.throughput_per_s)
    duration = sum(r.duration_s for r in runs)
    return TimedRun(samples=runs[0].samples, duration_s=duration, latency_s=sum(r.latency_s for r in runs),
                    latency_first_s=sum(r.latency_first_s for r in runs),
                    throughput_per_s=runs[0].samples / duration if duration > 0 else float("inf"),
                    bottleneck=slowest.bottleneck, bottleneck_utilisation=slowest.bottleneck_utilisation,
                    would_drop={k: sum(r.would_drop.get(k, 0) for r in runs) for k in slowest.would_drop},
                    utilisation={k: v for r in runs for k, v in r.utilisation.items()},
                    messages_in=sum(r.messages_in for r in runs), messages_out=sum(r.messages_out for r in runs),
                    bytes_in=sum(r.bytes_in for r in runs),
                    would_time_out=sum(r.would_time_out for r in runs))
