"""Timed emulation (tvm_spinn.runtime.timing, c_runtime/emulator/timing.c): results stay
bit-exact; the live IO ends give the times worked out by hand from the model's figures
(the gatherer's timer-tick flush, the host link's bytes); an overloaded core is named as
the bottleneck with the packets a board would drop; timing off falls back to the formula."""
import ctypes

import numpy as np
import pytest

from tests.test_emulator import _network, reference_forward
from tvm_spinn.errors import EmulatorError
from tvm_spinn.runtime import timing
from tvm_spinn.runtime.emulator import EmulatedBoard
from tvm_spinn.tiling import resources as res
from tvm_spinn.tiling import cycle_model


@pytest.fixture(scope="module")
def net():
    # 37 -> 29 -> 15 -> 9 -> 4 on a SpiNN-3, layer 0 in 3 x 4 tiles with reducers
    return _network(7, [37, 29, 15, 9, 4], ["relu", "tanh", "sigmoid", "none"],
                    tiling=[(3, 4), (2, 1), (1, 2), (1, 1)], board=res.SPINN_3)


def _out_ps_per_byte(program) -> float:
    return 1e12 / (timing.HOST_OUT_BYTES_PER_S_ETHERNET_CHIP if tuple(program.output.placement[:2]) == (0, 0)
                   else timing.HOST_OUT_BYTES_PER_S_OTHER_CHIP)


def _slow_core(monkeypatch, program, field, scale=1, value=None):
    """Give the program's first core a dearer cost field (ps per unit): times scale, or value."""
    slow = program.cores[0]
    real = timing.core_cost_ps

    def cost(kind, config, send_gap=0, send_phase=0):
        c = real(kind, config, send_gap, send_phase)
        if list(config) == list(slow.config):
            i = timing.COST_FIELDS.index(field)
            c[i] = c[i] * scale if value is None else value
        return c

    monkeypatch.setattr(timing, "core_cost_ps", cost)
    return slow


def test_timed_results_are_bit_exact_and_one_sample_waits_for_the_gatherers_tick(net):
    plan, program, q, rng = net
    x_q = q.quantize_input(rng.normal(size=(40, 37)).astype(np.float32))
    timed, untimed = EmulatedBoard(program, timed=True), EmulatedBoard(program, timed=False)
    y = timed.run(x_q)
    np.testing.assert_array_equal(y, untimed.run(x_q))
    np.testing.assert_array_equal(y, reference_forward(plan, x_q))
    assert untimed.last_timed is None and timed.last_timed.samples == 40

    timed.run(x_q[:1])
    one = timed.last_timed
    # 4 outputs = 2 events, far fewer than the 32 that fill a message: front-end-common's
    # gatherer sends them on its first timer tick (1 ms), then 2 + 2 * 8 bytes go to the host.
    expected = timing.TICK_S + (timing.OUT_MSG_OVERHEAD_BYTES + 2 * 8) * _out_ps_per_byte(program) * 1e-12
    assert one.latency_first_s == pytest.approx(expected, abs=1e-10)  # ps per byte rounded
    assert one.messages_out == 1 and one.messages_in == 1  # 19 pairs: one input message
    assert one.predicted_drops == 0 and one.would_time_out == 0


def test_a_batch_is_bound_by_the_host_link_the_model_says(net, monkeypatch):
    plan, program, q, rng = net
    n = 64
    monkeypatch.setenv("TVM_SPINN_LINK_MBPS", "0.5")  # the runtime's pacing, far below what the cores take
    board = EmulatedBoard(program, timed=True)
    board.run(q.quantize_input(rng.normal(size=(n, 37)).astype(np.float32)))
    run = board.last_timed
    pairs = (37 + 1) // 2
    bytes_in = pairs * 8 + -(-pairs // timing.EVENTS_PER_IN_MSG) * timing.IN_MSG_OVERHEAD_BYTES
    host_s = n * bytes_in / timing.host_in_bytes_per_s()
    assert run.utilisation["host in"] == pytest.approx(host_s / run.duration_s, rel=1e-6)
    assert run.throughput_per_s <= n / host_s * (1 + 1e-9)
    assert run.duration_s >= host_s
    assert run.bottleneck == "host in" and timing.bottleneck_class(run) == "host"
    assert run.predicted_drops == 0


def test_a_core_slower_than_its_packets_is_the_bottleneck_and_its_drops_are_reported(net, monkeypatch):
    plan, program, q, rng = net
    slow = _slow_core(monkeypatch, program, "fiq", scale=50)  # about 20 us a packet: they come every 0.4 us
    board = EmulatedBoard(program, timed=True)
    x_q = q.quantize_input(rng.normal(size=(32, 37)).astype(np.float32))
    y = board.run(x_q)
    run = board.last_timed
    assert run.bottleneck == f"core {slow.label}" and 0.9 < run.bottleneck_utilisation <= 1.0
    assert run.would_drop["at cores (router wait)"] > 0 and run.predicted_drops > 0
    # the numbers themselves are still the kernels' (the emulator drops nothing)
    np.testing.assert_array_equal(y, reference_forward(plan, x_q))


def test_a_reducer_waiting_longer_than_the_lost_timeout_is_reported(net, monkeypatch):
    """One column tile computes for about 0.1 s a sample: its reducer holds the other tiles'
    partial sums for longer than the binding's 20 ms lost-sample timeout, which on a board
    would release the sample as lost."""
    plan, program, q, rng = net
    _slow_core(monkeypatch, program, "mac", value=10 ** 9)  # 1 ms per MAC
    board = EmulatedBoard(program, timed=True)
    x_q = q.quantize_input(rng.normal(size=(3, 37)).astype(np.float32))
    y = board.run(x_q)
    assert board.last_timed.would_time_out >= 3  # each sample, at its reducer
    np.testing.assert_array_equal(y, reference_forward(plan, x_q))


def test_timing_off_by_environment(net, monkeypatch):
    plan, program, q, rng = net
    monkeypatch.setenv("TVM_SPINN_TIMING", "0")
    board = EmulatedBoard(program)
    board.run(q.quantize_input(rng.normal(size=(4, 37)).astype(np.float32)))
    assert not board.timed and board.last_timed is None
    monkeypatch.setenv("TVM_SPINN_TIMING", "maybe")
    with pytest.raises(EmulatorError, match="TVM_SPINN_TIMING='maybe': use one of 1, on"):
        EmulatedBoard(program)


def test_the_host_link_setting_is_read_at_every_run_and_the_limit_agrees(net, monkeypatch):
    """TVM_SPINN_LINK_MBPS changed between two runs of one board takes effect; the statistics'
    host link limit uses the same bytes and rate as the timed run (throughput never above it);
    a rate too small to model is a clear error."""
    from tvm_spinn.errors import BoardError
    from tvm_spinn.runtime.stats import collect

    plan, program, q, rng = net
    board = EmulatedBoard(program)
    x_q = q.quantize_input(rng.normal(size=(32, 37)).astype(np.float32))
    durations = []
    for mbps in ("0.5", "0.25"):
        monkeypatch.setenv("TVM_SPINN_LINK_MBPS", mbps)
        board.reset_counters()
        board.run(x_q)
        durations.append(board.last_timed.duration_s)
        stats = collect(program, board, 32, 0.0)
        assert stats.modelled_throughput_per_s <= stats.host_link_limit_per_s * (1 + 1e-6)
        assert board.last_timed.bottleneck == "host in"
    assert durations[1] == pytest.approx(2 * durations[0], rel=0.02)
    monkeypatch.setenv("TVM_SPINN_LINK_MBPS", "1e-30")
    with pytest.raises(BoardError, match="TVM_SPINN_LINK_MBPS=1e-30 is below"):
        board.run(x_q)


def _core_busy_ps(board: EmulatedBoard) -> dict:
    out = np.zeros(4, np.uint64)
    busy = {}
    for i, label in enumerate(board.core_labels):
        board._lib.spinn_emu_core_timing(board._emu, i, out.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64)))
        busy[label] = int(out[0])
    return busy


@pytest.mark.parametrize("field,counter", [("start", "rx_general"), ("lookup", "rx_lookups"), ("scan", "rx_scanned")])
def test_each_packet_off_the_receives_fast_path_is_charged_its_extra(monkeypatch, field, counter):
    """The kernels count the packets that take the receive's general path (``rx_general``),
    those whose receive entry they look up (``rx_lookups``) and the entries compared
    (``rx_scanned``); the timed emulation charges each its calibrated cycles (``start``,
    ``lookup``, ``scan``) on top of the fast path: raising one by d raises each core's busy
    time by its count x d (give or take a user event or two: the longer receive changes
    which packets find the core idle)."""
    from tests.test_tensor_kernels import _one_conv_program, random_input

    rng = np.random.default_rng(5)
    program = _one_conv_program(rng)
    x = random_input(rng, 6, (2, 6, 6))
    real, d = timing.core_cost_ps, 7_000_000  # 7 us more each
    runs = []
    for extra in (0, d):
        def cost(kind, config, send_gap=0, send_phase=0, extra=extra):
            c = real(kind, config, send_gap, send_phase)
            c[timing.COST_FIELDS.index(field)] += extra
            return c

        monkeypatch.setattr(timing, "core_cost_ps", cost)
        board = EmulatedBoard(program, timed=True)
        y = board.run(x)
        runs.append((y, board.core_counters(), _core_busy_ps(board), board.last_timed))
    (y0, counters, busy0, run0), (y1, _, busy1, run1) = runs
    np.testing.assert_array_equal(y0, y1)
    assert all(0 < c[counter] for c in counters.values())
    assert all(c["rx_general"] < c["packets_in"] for c in counters.values())
    event_ps = 2 * cycle_model.cost("conv_tile").event * timing.PS_PER_CYCLE
    for label, c in counters.items():
        assert busy1[label] - busy0[label] == pytest.approx(c[counter] * d, abs=event_ps), label
    assert run1.latency_s > run0.latency_s


class _Event(ctypes.Structure):
    """timing.h packet_t (24 bytes)."""
    _fields_ = [("t", ctypes.c_uint64), ("key", ctypes.c_uint32), ("payload", ctypes.c_uint32),
                ("chip", ctypes.c_uint32), ("hops", ctypes.c_uint16), ("arrival_link", ctypes.c_int8),
                ("flags", ctypes.c_uint8)]


def test_the_event_queue_takes_the_earliest_first_and_equal_times_as_they_came():
    """timing.c's radix heap against a plain list: pushes and pops interleaved, times near
    (a few ps) and far (up to 2^44 ps) from the last taken, many equal, some earlier than
    the last taken (filed at it). The order of equal times decides which packet a router
    or core takes first, so it must be the order they came in."""
    from tvm_spinn._native import emulator_library

    lib = emulator_library()
    lib.tm_queue_push.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Event)]
    lib.tm_queue_push.restype = ctypes.c_int
    lib.tm_queue_pop.argtypes = [ctypes.c_void_p]
    lib.tm_queue_pop.restype = _Event
    lib.tm_queue_free.argtypes = [ctypes.c_void_p]
    q = ctypes.create_string_buffer(1 << 16)  # a tm_queue_t, zeroed (it takes about 6 kB)
    rng = np.random.default_rng(3)
    pending, last, taken, expected = [], 0, [], []
    try:
        for n in range(20000):
            if pending and rng.random() < 0.45:
                i = min(range(len(pending)), key=lambda j: pending[j])  # earliest, then first come
                t, key = pending.pop(i)
                expected.append((t, key))
                e = lib.tm_queue_pop(q)
                taken.append((e.t, e.key))
                last = t
                continue
            kind = rng.integers(4)
            if kind == 0:
                t = last + int(rng.integers(0, 4))                # equal or nearly so
            elif kind == 1:
                t = last + int(rng.integers(0, 1 << 20))          # a hop away
            elif kind == 2:
                t = last + (int(rng.integers(0, 1 << 44)) & ~0xFFF)  # far, on a shared grid
            else:
                t = max(0, last - int(rng.integers(0, 1000)))      # earlier: filed at last
            assert lib.tm_queue_push(q, ctypes.byref(_Event(t=t, key=n))) == 0
            pending.append((max(t, last), n))
        while pending:
            i = min(range(len(pending)), key=lambda j: pending[j])
            expected.append(pending.pop(i))
            e = lib.tm_queue_pop(q)
            taken.append((e.t, e.key))
    finally:
        lib.tm_queue_free(q)
    assert taken == expected
    assert len({t for t, _ in expected}) < len(expected) * 0.9  # many ties were ordered
