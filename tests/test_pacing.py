"""The host link's pace (tvm_spinn.runtime.pacing): the runtime sends a program's input at
the fastest rate at which the timed emulation predicts that a board drops no packet, so
that a board run does not lose its samples to a host faster than the model takes."""
import logging

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import tvm_spinn
from tvm_spinn import zoo
from tvm_spinn.runtime import executors, pacing
from tvm_spinn.runtime.emulator import EmulatedBoard


@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    x = np.random.default_rng(2).standard_normal((16, 1, 28, 28)).astype(np.float32)
    mod = tvm_spinn.from_torch(zoo.LeNet5().eval(), (torch.from_numpy(x[:2]),))
    ex = tvm_spinn.build(mod, calibration=x, strict=True)
    return ex, x


def _program(ex):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    (e,) = executors(vm)
    return vm, e.program


def test_the_pace_is_the_fastest_rate_without_predicted_drops(lenet, monkeypatch):
    monkeypatch.delenv(pacing.ENV, raising=False)
    ex, x = lenet
    vm, program = _program(ex)

    def timed(rate):
        return EmulatedBoard(program, timed=True, host_mbps=rate)

    chosen = pacing.host_mbps(program, timed)
    assert chosen in pacing.CANDIDATE_MBPS
    assert pacing.probe(program, timed, chosen) == 0
    faster = [m for m in pacing.CANDIDATE_MBPS if m > chosen]
    assert all(pacing.probe(program, timed, m) > 0 for m in faster)  # LeNet-5 drops at 32 Mbit/s
    # the runtime's timed figures use that pace: no drops, the host link at about that rate
    vm["main"](tvm.runtime.tensor(x))
    run = tvm_spinn.statistics(vm).timed
    assert run.predicted_drops == 0
    assert run.bytes_in / run.duration_s <= chosen * 1e6 / 8 * 1.001


def test_the_environment_overrides_the_pace(lenet, monkeypatch):
    ex, x = lenet
    _, program = _program(ex)

    def never(rate):
        raise AssertionError("no probe when TVM_SPINN_LINK_MBPS is set")

    monkeypatch.setenv(pacing.ENV, "32")
    assert pacing.host_mbps(program, never) == 32.0
    monkeypatch.setenv(pacing.ENV, "fast")
    with pytest.raises(tvm_spinn.BoardError, match="TVM_SPINN_LINK_MBPS"):
        pacing.host_mbps(program, never)


def test_the_search_goes_on_past_rates_that_drop_more(lenet):
    """Drops need not fall as the host slows (how samples' bursts meet inside the board):
    a drop-free rate after three that drop more is still found (the thesis Conv1D-small's
    drops went 8,557, more, more, ... then none at 12 Mbit/s)."""
    ex, _ = lenet
    _, program = _program(ex)
    counts = dict(zip(pacing.CANDIDATE_MBPS, [5, 6, 7, 8, 9, 3, 0] + [0] * (len(pacing.CANDIDATE_MBPS) - 7)))

    class Board:
        def __init__(self, rate):
            self.rate = rate

        def run(self, x):
            self.last_timed = type("T", (), {"predicted_drops": counts[self.rate]})()

    assert pacing.choose(program, Board) == pacing.CANDIDATE_MBPS[6]


def test_drops_a_slower_host_does_not_cure_keep_the_fastest_rate(lenet, caplog):
    """Drops from inside the board (the same at every rate): the fastest rate, and a warning."""
    ex, _ = lenet
    _, program = _program(ex)
    counts = dict(zip(pacing.CANDIDATE_MBPS, [9, 7, 7, 8] + [7] * (len(pacing.CANDIDATE_MBPS) - 4)))

    class Board:
        def __init__(self, rate):
            self.rate = rate

        def run(self, x):
            self.last_timed = type("T", (), {"predicted_drops": counts[self.rate]})()

    with caplog.at_level(logging.WARNING, logger="tvm_spinn"):
        assert pacing.choose(program, Board) == 28.0
    assert "would drop packets (7 in" in caplog.text and "28 Mbit/s" in caplog.text


def test_send_gaps_space_a_readers_senders_and_make_them_take_turns():
    """machine.send_gaps: k senders of a reader each leave k x its cycles a packet in between
    two sends, and start a compute's sends rank x those cycles apart."""
    from tvm_spinn.machine.graph import KERNEL, OUTPUT, MachineGraphSpec, PartitionSpec, VertexSpec
    from tvm_spinn.machine.send_gaps import send_gaps
    from tvm_spinn.tiling.cycle_model import cost

    v = [VertexSpec(n, KERNEL, binary="dense_tile.aplx") for n in "ABC"]
    v += [VertexSpec("D", KERNEL, binary="dense_reduce.aplx"), VertexSpec("E", KERNEL, binary="pool_tile.aplx"),
          VertexSpec("out", OUTPUT)]
    parts = [PartitionSpec("A", 0, ["D", "E"]), PartitionSpec("B", 0, ["D"]), PartitionSpec("C", 0, ["D"]),
             PartitionSpec("D", 0, ["out"]), PartitionSpec("E", 0, ["out"])]
    spec = MachineGraphSpec(v, [], partitions=parts)
    gaps = send_gaps(spec)
    d = cost("dense_reduce").packet_in
    assert gaps["A"] == (np.ceil(3 * d), 0) and gaps["B"] == (np.ceil(3 * d), np.ceil(d))
    assert gaps["C"] == (np.ceil(3 * d), np.ceil(2 * d))
    out = cost("dense_tile_i32").packet_in  # the gatherer, taken as a dense tile
    assert gaps["D"] == (np.ceil(2 * out), 0) and gaps["E"] == (np.ceil(2 * out), np.ceil(out))


def test_the_config_header_carries_the_send_pace():
    from tvm_spinn.machine.graph import frame_config, send_pace, unframe_config

    region = frame_config(np.arange(5, dtype=np.uint32), send_gap=2960, send_phase=740)
    assert send_pace(region) == (2960, 740)
    np.testing.assert_array_equal(unframe_config(region), np.arange(5))
    with pytest.raises(ValueError, match="65535"):
        frame_config(np.arange(5, dtype=np.uint32), send_gap=70000)


def test_with_its_send_gaps_lenet5_drops_at_most_at_one_of_the_fastest_paces(lenet, monkeypatch):
    """LeNet-5's fan-in (its first layer's tiles all sending to the next layer's) is paced by
    the send gaps: the fastest host pace drops none, and of the fastest six at most one
    drops any (drops need not fall as the host slows: where the samples' bursts meet
    depends on the pace; 28 Mbit/s drops 45 of 16 samples' packets here). Since the receive
    takes interleaved producers on its fast path (8 remembered rows), LeNet-5 without gaps
    drops no more (32 at one pace): the gaps matter where readers have many senders
    (ResNet-8, DS-CNN drop at every pace without the general path's share in them,
    benchmarks/bench_board.py); their arithmetic is tested below."""
    monkeypatch.delenv(pacing.ENV, raising=False)
    ex, x = lenet
    _, program = _program(ex)
    assert any(c.send_gap for c in program.cores) and any(c.send_phase for c in program.cores)

    def timed(rate):
        return EmulatedBoard(program, timed=True, host_mbps=rate)

    paced = [pacing.probe(program, timed, r) for r in pacing.CANDIDATE_MBPS[:6]]
    assert paced[0] == 0 and sum(d > 0 for d in paced) <= 1, paced


def test_send_gaps_share_a_reader_by_the_packets_each_sender_sends():
    """Progressive filling: a reader's senders, all sending at once, send no faster than it
    takes packets in; a sender of three times the packets gets three times the share; a
    sender another reader holds back leaves the rest of its other reader to the rest."""
    from tvm_spinn.machine.graph import KERNEL, MachineGraphSpec, PartitionSpec, VertexSpec
    from tvm_spinn.machine.send_gaps import send_gaps
    from tvm_spinn.tiling.cycle_model import cost

    v = [VertexSpec(n, KERNEL, binary="conv_tile.aplx") for n in ("A", "B", "C", "R", "Q")]
    parts = [PartitionSpec("A", 0, ["R"], 300), PartitionSpec("B", 0, ["R"], 60), PartitionSpec("B", 1, ["Q"], 40),
             PartitionSpec("C", 0, ["Q"], 100)]
    gaps = send_gaps(MachineGraphSpec(v, [], partitions=parts))
    r = cost("conv_tile").packet_in_among(2, 2)  # two senders, a partition each, to each reader
    # R (A 300 + B 100 packets a sample) fills first: A and B at 1 / (400 r) samples a cycle;
    # then Q has 1/r - 100 / (400 r) packets a cycle left for C's 100 packets
    assert gaps["A"] == (np.ceil(400 * r / 300), 0) and gaps["B"] == (np.ceil(4 * r), np.ceil(r))
    assert gaps["C"] == (np.ceil(400 * r / 300), np.ceil(r))
    for reader, senders in (("R", "AB"), ("Q", "BC")):
        assert sum(1 / gaps[s][0] for s in senders) <= 1 / r


def test_send_gaps_keep_every_readers_senders_within_its_pace():
    """On random graphs: no reader's senders, each at its gap, send faster than the reader
    takes packets in; and each sender is held back by a reader that is full (max-min
    fair: none could send faster without another's share shrinking)."""
    from tvm_spinn.machine.graph import KERNEL, MachineGraphSpec, PartitionSpec, VertexSpec
    from tvm_spinn.machine.send_gaps import _KIND_OF_BINARY, send_gaps
    from tvm_spinn.tiling.cycle_model import cost

    rng = np.random.default_rng(4)
    binaries = list(_KIND_OF_BINARY)
    for _ in range(30):
        n = int(rng.integers(3, 12))
        v = [VertexSpec(f"v{i}", KERNEL, binary=binaries[rng.integers(len(binaries))]) for i in range(n)]
        parts = []
        for i in range(n):
            posts = [f"v{j}" for j in rng.choice(n, size=int(rng.integers(1, 4)), replace=False) if j != i]
            if posts:
                parts.append(PartitionSpec(f"v{i}", 0, posts, int(rng.integers(1, 500))))
        gaps = send_gaps(MachineGraphSpec(v, [], partitions=parts))
        readers, entries = {}, {}
        for p in parts:
            for post in p.posts:
                readers.setdefault(post, set()).add(p.pre)
                entries[post] = entries.get(post, 0) + 1
        pace = {r: 1 / cost(_KIND_OF_BINARY[next(x.binary for x in v if x.label == r)]).packet_in_among(
            len(readers[r]), entries[r]) for r in readers}
        rate = {s: 1 / g for s, (g, _) in gaps.items()}
        for r, senders in readers.items():
            assert sum(rate[s] for s in senders) <= pace[r] * (1 + 1e-9)
        for s in rate:  # a full reader holds it back (rates rounded down by the gaps' ceil)
            assert any(sum(rate[t] for t in readers[r]) > pace[r] * 0.97 for r in readers if s in readers[r])


def test_the_planner_cuts_readers_so_that_their_pace_keeps_the_budget(monkeypatch):
    """A sender's pace holds for every packet it sends: when a reader's tile needs a few rows
    of every producer tile (an add cut into channel groups after producers cut into row
    bands), those producers send all their rows at its pace. The planner cuts such readers
    the other way where a cut that fits the budget exists: on ResNet-8 as planned, no
    kernel's sends of a sample at its gap (machine.send_gaps on the built graph) take longer
    than the cycle budget (the residual add after the second stage was cut into 5 channel
    groups, which paced its producers to 2.6 times the budget)."""
    from tvm_spinn import zoo
    from tvm_spinn.codegen import codegen
    from tvm_spinn.machine.builder import build_machine_graph
    from tvm_spinn.machine.send_gaps import send_gaps
    from tvm_spinn.tiling.tensor import TensorOpPlan

    plans = []
    real = codegen.plan_function
    monkeypatch.setattr(codegen, "plan_function", lambda *a, **k: plans.append(real(*a, **k)) or plans[-1])
    torch.manual_seed(0)
    x = np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32)
    mod = tvm_spinn.from_torch(zoo.randomize_bn(zoo.ResNet8()).eval(), (torch.from_numpy(x[:2]),))
    tvm_spinn.build(mod, calibration=x, strict=True)
    (plan,) = plans
    spec = build_machine_graph(plan).spec
    sent = {}
    for part in spec.sender_partitions():
        sent[part.pre] = sent.get(part.pre, 0) + part.packets
    gaps = send_gaps(spec)
    worst = max(sent[label] * gap for label, (gap, _) in gaps.items())
    assert worst <= plan.cycle_budget, (worst, plan.cycle_budget)
    add = next(p for q, p in zip(plan.qgraph.ops, plan.plans) if q.name == "s2 (add, relu)")
    assert isinstance(add, TensorOpPlan) and len({(t.c0, t.nc) for t in add.tiles}) == 1  # row bands


def test_a_reader_shared_with_a_live_input_leaves_its_kernel_senders_a_share():
    """A live input sends a message's packets faster than any core takes them in, so a
    reader it shares with a kernel (a residual add of the model's input) cannot leave it
    that rate: it takes its fair share, and the kernel the rest (it once got none, a gap of
    MAX_CYCLES: 12 samples/s and sample timeouts on such a model in the timed emulation)."""
    from tvm_spinn.machine.graph import INPUT, KERNEL, MachineGraphSpec, PartitionSpec, VertexSpec
    from tvm_spinn.machine.send_gaps import send_gaps
    from tvm_spinn.tiling.cycle_model import cost, input_core_cycles

    r = cost("add_tile").packet_in_among(2, 2)  # two senders, a partition each
    assert input_core_cycles() < r  # what makes the case
    v = [VertexSpec("in", INPUT), VertexSpec("K", KERNEL, binary="conv_tile.aplx"),
         VertexSpec("R", KERNEL, binary="add_tile.aplx")]
    parts = [PartitionSpec("in", 0, ["K", "R"], 100), PartitionSpec("K", 0, ["R"], 300)]
    gaps = send_gaps(MachineGraphSpec(v, [], partitions=parts))
    # R (in 100 + K 300 packets a sample) fills first: K at 300 / (400 r) packets a cycle
    assert gaps["K"] == (np.ceil(400 * r / 300), 0)


def test_a_probe_streams_whole_windows_of_copies():
    """With copies, a window is n_slots groups of one sample per copy: a probe of n_slots
    samples per window left most of it empty (ResNet-8, 3 copies on spinn5x3, 8 slots:
    no drop probed at 28 Mbit/s, 240 in a run of 48 samples)."""
    from types import SimpleNamespace

    shapes = []

    class Board:
        def __init__(self, rate):
            self.last_timed = SimpleNamespace(predicted_drops=0)

        def run(self, x):
            shapes.append(x.shape)

    for replicas in (1, 3):
        pacing.probe(SimpleNamespace(n_slots=8, replicas=replicas, in_features=5), Board, 32.0)
    assert shapes == [(pacing.PROBE_GROUPS * 8, 5), (pacing.PROBE_GROUPS * 8 * 3, 5)]
