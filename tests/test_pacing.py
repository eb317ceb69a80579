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


def test_without_its_send_gaps_lenet5_would_drop_packets(lenet, monkeypatch):
    """At the host pace chosen with them, the send gaps are what keeps LeNet-5's fan-in
    (its first layer's tiles all sending to the next layer's) from dropping packets."""
    monkeypatch.delenv(pacing.ENV, raising=False)
    ex, x = lenet
    _, program = _program(ex)
    assert any(c.send_gap for c in program.cores) and any(c.send_phase for c in program.cores)

    def timed(rate):
        return EmulatedBoard(program, timed=True, host_mbps=rate)

    pace = pacing.host_mbps(program, timed)
    assert pacing.probe(program, timed, pace) == 0
    for c in program.cores:
        monkeypatch.setattr(c, "send_gap", 0)
        monkeypatch.setattr(c, "send_phase", 0)
    assert pacing.probe(program, timed, pace) > 0
