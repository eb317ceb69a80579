"""Copies of a model on several boards (issue 11 item 3): with board="spinn5x3", copy k sits
on board k % 3 with its live inputs on that board's Ethernet chip, the host sends each
copy's input through that board's Ethernet (one paced stream per board in the timed
emulation and in the real-board runtime), and the results stay bit-exact."""
import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import tvm_spinn
from tvm_spinn import integer_reference
from tvm_spinn.runtime import executors, timing
from tvm_spinn.runtime.emulator import EmulatedBoard
from tvm_spinn.tiling import resources as res
from tests.test_replicas import _small_cnn

TRIAD = res.SPINN_5_X3


@pytest.fixture(scope="module")
def cnn():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((48, 1, 12, 12)).astype(np.float32)
    return tvm_spinn.from_torch(_small_cnn(), (torch.from_numpy(x[:2]),)), x


def _run(mod, x, board):
    ex = tvm_spinn.build(mod, calibration=x, strict=True, replicas=3, board=board)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    with EmulatedBoard.recording() as seen:
        y = vm["main"](tvm.runtime.tensor(x)).numpy()
    (executor,) = executors(vm)
    ((_, x_q, y_q),) = seen
    return y, executor.program, x_q, y_q, tvm_spinn.statistics(vm).timed


@pytest.fixture(scope="module")
def triad_run(cnn):
    mod, x = cnn
    return _run(mod, x, "spinn5x3")


def test_each_copy_sits_on_its_own_board_with_its_inputs_at_the_ethernet_chip(triad_run):
    _, program, _, _, _ = triad_run
    assert program.replicas == 3
    for inp in program.inputs:  # copy k's inputs on board k's Ethernet chip
        assert tuple(inp.chip) == TRIAD.ethernet_chips[inp.replica]
    for core in program.cores:  # ... and all its kernels on board k
        k = int(core.label.split(".")[0][1:])
        assert TRIAD.ethernet_chip_of(*core.placement[:2]) == TRIAD.ethernet_chips[k]


def test_copies_on_three_boards_are_bit_exact(cnn, triad_run):
    y, program, x_q, y_q, _ = triad_run
    np.testing.assert_array_equal(y_q, integer_reference(program, x_q))
    # and the same as one copy on one board
    mod, x = cnn
    ex = tvm_spinn.build(mod, calibration=x, strict=True)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    np.testing.assert_array_equal(y, vm["main"](tvm.runtime.tensor(x)).numpy())


def test_each_board_takes_its_copy_input_through_its_own_host_link(cnn, triad_run):
    _, program, x_q, _, run = triad_run
    streams = {k: v for k, v in run.utilisation.items() if k.startswith("host in board ")}
    assert sorted(streams) == [f"host in board {x},{y}" for x, y in sorted(TRIAD.ethernet_chips)]
    # the copies are alike, so are their streams; the busiest is the "host in" figure
    assert min(streams.values()) > 0
    assert max(streams.values()) == pytest.approx(min(streams.values()), rel=1e-6)
    assert run.utilisation["host in"] == pytest.approx(max(streams.values()), rel=1e-9)
    # every byte the host sent, counted against the program's own packets
    assert run.bytes_in == pytest.approx(timing.program_in_bytes(program) * len(x_q), rel=1e-9)
    # the same three copies on one board share one host link: three streams beat it
    mod, x = cnn
    _, one_board, _, _, shared = _run(mod, x, "spinn5")
    assert not any(k.startswith("host in board") for k in shared.utilisation)
    assert shared.bottleneck == "host in"
    assert run.throughput_per_s > 1.5 * shared.throughput_per_s


def test_the_real_board_runtime_sends_each_input_to_its_board_ethernet(triad_run):
    """live_io.input_streams: the transceiver's SCAMP connection to each board's Ethernet chip."""
    from spinnman.connections.udp_packet_connections import SCAMPConnection

    from tvm_spinn.runtime.board.live_io import input_streams

    _, program, _, _, _ = triad_run
    conns = [SCAMPConnection(chip_x=x, chip_y=y, remote_host="127.0.0.1") for x, y in TRIAD.ethernet_chips]

    class Txrx:
        def get_connections(self):
            return set(conns)

    try:
        cores = [program.placements[i.label] for i in program.inputs]
        streams, chosen = input_streams(Txrx(), TRIAD, cores)
        assert streams == [inp.replica for inp in program.inputs]
        assert [(c.chip_x, c.chip_y) for c in chosen] == [TRIAD.ethernet_chips[s] for s in streams]
        # one board: one stream, the transceiver's own connection
        assert input_streams(Txrx(), res.SPINN_5, cores) == ([0] * len(cores), [None] * len(cores))
    finally:
        for c in conns:
            c.close()
