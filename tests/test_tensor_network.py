"""Tensor networks (conv, pool, add, flatten, dense) through tiling, the toolchain's
mapping and the emulated board, without TVM: bit for bit against the integer reference."""
import numpy as np
import pytest

from tvm_spinn.codegen.codegen import make_program
from tvm_spinn.graph import OpGraph, float_forward
from tvm_spinn.graph.ops import Add, Conv2D, DenseLayer, Flatten, Pool2D
from tvm_spinn.machine.builder import build_machine_graph
from tvm_spinn.machine.mapping import map_graph
from tvm_spinn.quantization import quantize_graph
from tvm_spinn.runtime import integer_reference
from tvm_spinn.runtime.emulator import EmulatedBoard
from tvm_spinn.tiling import resources as res
from tvm_spinn.tiling.planner import plan_graph
from tvm_spinn.tiling.tensor import FusedPool, TensorOpPlan, tensor_plan


def _conv(rng, o, i, k, stride=1, pad=1, act="relu", inputs=(), groups=1):
    pads = pad if isinstance(pad, tuple) else (pad,) * 4
    w = rng.normal(size=(o, i // groups, k[0], k[1]) if isinstance(k, tuple) else (o, i // groups, k, k))
    return Conv2D((w / np.sqrt(w[0].size)).astype(np.float32), rng.normal(0, 0.1, o).astype(np.float32),
                  (stride, stride) if np.isscalar(stride) else stride, pads, groups, act, f"conv{o}", inputs)


def _run(ops, input_shape, rng, n=40, budget=None, fuse_pools=True, board_out=None, tilings=None):
    """Plan (tilings: {op index: (channel groups, row bands)} cut by hand), map, run on the
    emulator: bit-exact against the integer reference and within the stated bound."""
    x = rng.normal(size=(n,) + input_shape).astype(np.float32)
    q = quantize_graph(OpGraph(ops, [input_shape]), x)
    plan = plan_graph(q, res.SPINN_5, budget, fuse_pools)
    for i, (groups, bands) in (tilings or {}).items():
        plan.plans[i] = tensor_plan(q.ops[i], groups, bands)
    layout = build_machine_graph(plan)
    program = make_program("t", plan, layout, map_graph(layout.spec))
    board = EmulatedBoard(program)
    y = board.run(q.quantize_input(x).reshape(n, -1))
    if board_out is not None:
        board_out.append(board)
    np.testing.assert_array_equal(y, integer_reference(program, x))
    y_float = float_forward(ops, x)[-1].reshape(n, -1)
    err = np.abs(y * program.output_scale - y_float).max()
    # The calibration data is x itself: the stated worst-case bound's premise holds.
    assert err <= program.error_bound.max(), (err, program.error_bound.max())
    return program, plan, err, np.abs(y_float).max()


def test_lenet_like_network(rng):
    ops = [_conv(rng, 6, 1, 5, pad=2), Pool2D("max", (2, 2), (2, 2), (0, 0, 0, 0), (14, 14), True, "pool1"),
           _conv(rng, 16, 6, 5, pad=0), Pool2D("avg", (2, 2), (2, 2), (0, 0, 0, 0), (5, 5), True, "pool2"),
           Flatten("flat"), DenseLayer((rng.normal(size=(30, 400)) / 20).astype(np.float32), None, "relu", "fc1"),
           DenseLayer((rng.normal(size=(10, 30)) / 5).astype(np.float32), None, "none", "fc2")]
    program, plan, err, scale = _run(ops, (1, 28, 28), rng, budget=20_000)
    assert err < 0.05 * scale
    assert any(isinstance(p, TensorOpPlan) and len(p.tiles) > 1 for p in plan.plans), "convs must be tiled"


def test_residual_block_with_1d_convs_and_strides(rng):
    ops = [_conv(rng, 8, 3, (1, 3), pad=(0, 1, 0, 1)),                                   # 0
           _conv(rng, 8, 8, (1, 3), pad=(0, 1, 0, 1), act="none"),                      # 1
           Add("relu", "add", (0, 1)),                                                  # 2
           _conv(rng, 4, 8, (1, 4), stride=(1, 2), pad=(0, 1, 0, 2), act="tanh"),       # 3: even kernel, asymmetric
           Pool2D("max", (1, 3), (1, 2), (0, 1, 0, 1), (1, 16), True, "mp"),            # 4
           Pool2D("avg", (1, 3), (1, 1), (0, 1, 0, 1), (1, 16), False, "ap"),           # 5
           Flatten("flat"), DenseLayer((rng.normal(size=(5, 64)) / 8).astype(np.float32), None, "sigmoid", "fc")]
    program, plan, err, scale = _run(ops, (3, 1, 64), rng, budget=5_000)
    assert err < 0.05


def test_depthwise_and_output_tensor(rng):
    ops = [_conv(rng, 6, 3, 3), _conv(rng, 6, 6, 3, groups=6, act="none")]
    program, plan, err, scale = _run(ops, (3, 9, 11), rng)
    assert err < 0.05 * scale


def test_depthwise_with_channel_multipliers(rng):
    """Depthwise x2 (its max pool fused) and x3 convs, tiled into channel groups whose first
    output channel is not a multiple of the multiplier: by the planner, and by hand into 12
    groups of 2 channels, where a x3 tile starting at channel 2 (mod 3) reads 2 input
    channels."""
    # the planner's cuts at two budgets (one gives the x2 conv odd groups, the other the x3
    # conv groups off its multiple, by the calibrated costs), then by hand
    for tilings, budget in ((None, 42_000), (None, 35_000), ({3: (12, 1)}, 50_000)):
        r = np.random.default_rng(3)
        ops = [_conv(r, 4, 3, 3), _conv(r, 8, 4, 3, groups=4),
               Pool2D("max", (2, 2), (2, 2), (0, 0, 0, 0), (5, 5), True, "pool"),
               _conv(r, 24, 8, 3, groups=8, act="none")]
        program, plan, err, scale = _run(ops, (3, 10, 10), rng, budget=budget, tilings=tilings)
        assert err < 0.05 * scale
        dw2, dw3 = plan.plans[1], plan.plans[3]
        assert dw2.pool is not None  # it costs no core
        if tilings is not None:
            assert any(t.c0 % 3 == 2 and t.nc == 2 for t in dw3.tiles)  # reads 2 of its 3 input channels
        elif budget == 42_000:
            assert any(t.c0 % 2 for t in dw2.tiles)
        else:
            assert any(t.c0 % 3 for t in dw3.tiles)


def _lenet_ops(rng):
    return [_conv(rng, 6, 1, 5, pad=2), Pool2D("max", (2, 2), (2, 2), (0, 0, 0, 0), (14, 14), True, "pool1"),
            _conv(rng, 16, 6, 5, pad=0), Pool2D("avg", (3, 3), (2, 2), (1, 1, 1, 1), (5, 5), False, "pool2"),
            Flatten("flat"), DenseLayer((rng.normal(size=(10, 400)) / 20).astype(np.float32), None, "none", "fc")]


def test_pools_fused_into_their_convolutions_save_packets(rng):
    sent = []
    for fuse in (True, False):
        boards = []
        # no cycle budget to speak of: the tiling follows DTCM alone, whatever the cycle model says
        program, plan, err, scale = _run(_lenet_ops(np.random.default_rng(7)), (1, 28, 28), rng, budget=10 ** 9,
                                         fuse_pools=fuse, board_out=boards)
        fused = [p for p in plan.plans if isinstance(p, FusedPool)]
        assert bool(fused) == fuse, "a pool right after its only-reader conv is fused when that costs no core"
        assert [lay.fused_into for lay in program.layers if lay.kind == "Pool2D" and lay.fused_into] \
            == [f.conv.qop.name for f in fused]
        sent.append(sum(c["packets_out"] for c in boards[0].core_counters().values()))
    assert sent[0] < sent[1], sent


def test_conv_cut_by_input_channel_groups(rng):
    # 160 input channels x 3 rows x 16 columns x 4 slots of int16 > 64 KB: one output channel
    # does not fit a core, so the conv is cut into input-channel groups with reducers.
    ops = [_conv(rng, 6, 160, 3, pad=1, act="tanh"), Pool2D("max", (2, 2), (2, 2), (0, 0, 0, 0), (8, 8), True, "mp"),
           _conv(rng, 4, 6, 3, pad=0, act="sigmoid"), Flatten("flat"),
           DenseLayer((rng.normal(size=(5, 144)) / 12).astype(np.float32), None, "none", "fc")]
    program, plan, err, scale = _run(ops, (160, 16, 16), rng, n=24)
    split = plan.plans[0]
    assert split.n_col_tiles > 1 and split.partial_shift > 0
    assert split.n_cores == len(split.tiles) + len(split.blocks)
    assert program.ops[0].split == split.ic_bounds
    assert err < 0.05 * scale


# DTCM the spin1 runtime takes beside a kernel's config and workspace, measured for every
# kernel linked against the real SDK 7.4.1 and started under qemu (stack, static data,
# SARK's heap headers and SDP buffers, the binding's allocation headers): at most 7,996 B;
# the conv tile's static data has since grown by 72 B (its receive row cache; bss 4,705 ->
# 4,777 B in the real-SDK build), then by 8 B (its row-key table pointer and stride: 4,785 B),
# then by 8 B (the im2row's inside columns: 4,793 B), then by 28 B (the binding's send
# pace: gap, phase, last send, first-send flag; its due and running slots and receive
# hook: 4,821 B), then by 104 B (its receive remembers 4 rows, not 1: 4,925 B), then by 4 B
# (its counter of general-path packets: 4,929 B), then by 160 B (8 rows, not 4, each with
# its half pair: 5,089 B), then by 36 B (8-bit rows: 5,125 B), so 8,416 B.
MEASURED_RUNTIME_DTCM = 8416


@pytest.mark.parametrize("slots", [res.N_SLOTS, res.MORE_SLOTS])
def test_planned_cores_fit_dtcm_as_the_kernels_allocate(rng, slots):
    """Every core the planner accepts fits a core's DTCM by the kernels' own account
    (``spinn_*_workspace`` of its config, the config copy, the runtime's measured share),
    with tiles pushed to the DTCM limit by a generous cycle budget (the planner once
    under-counted a conv tile's weight row: such tiles failed to allocate on a board); with
    the default samples in flight per core and with the more a build tries first."""
    import ctypes

    from tvm_spinn._native import emulator_library
    from tvm_spinn.machine.graph import KERNEL_BINARIES

    lib = emulator_library()
    # every kernel kind: conv tiles (dense and depthwise), a pool, a residual add, a dense
    # layer cut into column tiles with reducers; then a conv cut into input-channel groups
    graphs = [
        ([_conv(rng, 128, 128, 3), Pool2D("max", (2, 2), (2, 2), (0, 0, 0, 0), (4, 4), name="pool", inputs=(0,)),
          _conv(rng, 64, 128, 3, inputs=(1,)), _conv(rng, 64, 64, 3, inputs=(2,), groups=64),
          Add("relu", "add", (2, 3)), Flatten("flat", (4,)),
          DenseLayer((rng.normal(size=(200, 1024)) / 32).astype(np.float32), None, "relu", "fc", (5,))],
         (128, 8, 8), 1e9),
        ([_conv(rng, 8, 1024, 3)], (1024, 6, 6), None),
        ([DenseLayer((rng.normal(size=(64, 20000)) / 128).astype(np.float32), None, "relu", "wide")], (1, 1, 20000), 1e9),
    ]
    worst, kinds = 0, set()
    for ops, shape, budget in graphs:
        x = rng.normal(size=(8,) + shape).astype(np.float32)
        q = quantize_graph(OpGraph(ops, [shape]), x)
        with res.slots(slots):
            plan = plan_graph(q, res.SPINN_5, budget, True)
        layout = build_machine_graph(plan)
        program = make_program("t", plan, layout, map_graph(layout.spec))
        assert program.n_slots == slots
        for core in program.cores:
            fn = getattr(lib, f"spinn_{KERNEL_BINARIES[core.kind][:-len('.aplx')]}_workspace")
            fn.restype, fn.argtypes = ctypes.c_uint32, [ctypes.POINTER(ctypes.c_uint32), ctypes.c_uint32]
            cfg = np.ascontiguousarray(core.config, np.uint32)
            workspace = fn(cfg.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), len(cfg))
            assert workspace > 0, core.label
            need = 4 * len(cfg) + workspace + 8 + MEASURED_RUNTIME_DTCM
            assert need <= res.DTCM_BYTES, (core.label, KERNEL_BINARIES[core.kind], need)
            worst = max(worst, need)
            kinds.add(core.kind)
    assert kinds == set(KERNEL_BINARIES), kinds  # every kernel kind was checked
    assert worst > res.DTCM_BYTES - 8 * 1024  # the budget really pushed tiles to the limit


def test_partitions_send_rows_only_to_the_cores_that_read_them(rng, monkeypatch):
    """A kernel whose rows go to different cores sends each set of rows on its own multicast
    partition: a convolution cut into row bands then receives exactly the rows its windows
    read (no packet interrupt for rows it would drop), the routes deliver each partition to
    its readers only, and the results stay bit-exact; the graph input is cut into one live
    input per block of rows the same cores read. One partition per sender, as before,
    brings every band all the rows of every producer it overlaps."""
    from tests.test_mapping import assert_routes_exact
    from tvm_spinn.machine import builder

    ops = [_conv(rng, 8, 3, 3), _conv(rng, 8, 8, 3, inputs=(0,)), _conv(rng, 8, 8, 3, act="none", inputs=(1,)),
           Add("relu", "add", (0, 2))]
    shape, n = (3, 16, 16), 12
    x = rng.normal(size=(n,) + shape).astype(np.float32)
    q = quantize_graph(OpGraph(ops, [shape]), x)
    delivered = {}
    for split in (False, True):
        monkeypatch.setattr(builder, "SPLIT_PARTITIONS", split)
        plan = plan_graph(q, res.SPINN_5, None, True)
        for i, bands in ((0, 4), (1, 3), (2, 4), (3, 2)):  # bands that do not line up
            plan.plans[i] = tensor_plan(q.ops[i], 1, bands)
        layout = build_machine_graph(plan)
        mapping = map_graph(layout.spec)
        assert_routes_exact(layout.spec, mapping)
        program = make_program("t", plan, layout, mapping)
        board = EmulatedBoard(program)
        y = board.run(q.quantize_input(x).reshape(n, -1))
        np.testing.assert_array_equal(y, integer_reference(program, x))
        counters = board.core_counters()
        delivered[split] = sum(c["packets_in"] for label, c in counters.items() if label[:3] in ("L0_", "L1_", "L2_"))
        n_parts = {}
        for p in layout.spec.partitions:
            n_parts[p.pre] = n_parts.get(p.pre, 0) + 1
        if not split:
            assert max(n_parts.values()) == 1
            continue
        assert max(n_parts[f"L0_t{k}_0"] for k in range(4)) > 1
        # the graph input is cut into blocks of rows, one live input each
        assert len(program.inputs) > 1 and program.input_shapes == [shape]
        # every band receives exactly the rows it buffers
        for i, channels in ((0, 3), (1, 8), (2, 8)):
            for k, t in enumerate(plan.plans[i].tiles):
                expect = n * channels * t.nih * (16 // 2)
                assert counters[f"L{i}_t{k}_0"]["packets_in"] == expect, (i, k)
    assert delivered[True] < 0.8 * delivered[False], delivered


def test_the_input_is_cut_into_no_more_live_inputs_than_the_board_has_cores_left(rng):
    """The planner counts one core per graph input; the builder cuts an input into one live
    input per set of readers (bands), each a core more: only as many as the board has
    cores beyond the plan's (none left: the input stays one vertex), or a plan that fits
    the board fails in the mapping (a 32-channel residual network on 3 x 34 x 33 planned
    805 of the SpiNN-5's 808 cores, and its input cut 9 ways needed 813)."""
    from dataclasses import replace

    ops = [_conv(rng, 8, 3, 3), _conv(rng, 8, 8, 3, inputs=(0,))]
    shape = (3, 16, 16)
    q = quantize_graph(OpGraph(ops, [shape]), rng.normal(size=(8,) + shape).astype(np.float32))
    plan = plan_graph(q, res.SPINN_5, None, True)
    plan.plans[0] = tensor_plan(q.ops[0], 1, 4)
    inputs = lambda p: sum(v.kind == "input" for v in build_machine_graph(p).spec.vertices)  # noqa: E731
    assert inputs(plan) > 3  # a live input per set of readers (bands, their halos): the board has room
    for spare in (0, 1, 2):
        small = replace(plan, board=replace(res.SPINN_5, app_cores=plan.n_cores + spare))
        layout = build_machine_graph(small)
        assert inputs(small) == 1 + spare and len(layout.spec.vertices) <= small.board.app_cores


def test_partitions_know_the_packets_they_carry(rng):
    """PartitionSpec.packets (the send gaps share a reader out by them) add up, per sender,
    to the packets the emulator counts it sending a sample: every kernel kind, row
    partitions, partial sums (dense and conv reducers: one int32 a key), a fused pool,
    8-bit input quads and an odd row width."""
    from tvm_spinn.machine.graph import INPUT, KERNEL
    from tvm_spinn.quantization.quantize import CalibrationSettings

    graphs = [
        ([_conv(rng, 32, 16, 3), Pool2D("max", (2, 2), (2, 2), (0, 0, 0, 0), (4, 4), name="pool", inputs=(0,)),
          _conv(rng, 16, 32, 3, inputs=(1,)), _conv(rng, 16, 16, 3, inputs=(2,), groups=16),
          Add("relu", "add", (2, 3)), Flatten("flat", (4,)),
          DenseLayer((rng.normal(size=(40, 256)) / 16).astype(np.float32), None, "relu", "fc", (5,))],
         (16, 9, 9), 30_000, False),
        ([_conv(rng, 4, 160, 3, act="tanh"), _conv(rng, 6, 4, 3, act="none", inputs=(0,))], (160, 7, 7), None, False),
        ([_conv(rng, 8, 3, 3), _conv(rng, 8, 8, 3, inputs=(0,))], (3, 12, 11), 20_000, True),
        ([DenseLayer((rng.normal(size=(24, 3000)) / 50).astype(np.float32), None, "relu", "wide")], (1, 1, 3000),
         None, False),
    ]
    kinds = set()
    for ops, shape, budget, eight_bit in graphs:
        n = 5
        x = rng.normal(size=(n,) + shape).astype(np.float32)
        if eight_bit:
            x = np.round(np.abs(x) * 40).clip(0, 255).astype(np.float32)
        settings = CalibrationSettings(input_bits=8) if eight_bit else CalibrationSettings()
        q = quantize_graph(OpGraph(ops, [shape]), x, settings)
        plan = plan_graph(q, res.SPINN_5, budget, True)
        layout = build_machine_graph(plan)
        program = make_program("t", plan, layout, map_graph(layout.spec))
        board = EmulatedBoard(program)
        board.run(q.quantize_input(x).reshape(n, -1))
        planned = {}
        for part in layout.spec.sender_partitions():
            planned[part.pre] = planned.get(part.pre, 0) + part.packets
        counted = {label: c["packets_out"] / n for label, c in board.core_counters().items()}
        kinds |= {c.kind for c in program.cores}
        assert {v.label for v in layout.spec.vertices if v.kind == KERNEL} <= set(planned)
        for label, packets in counted.items():
            assert planned[label] == packets, (label, planned[label], packets)
        inputs = sum(planned[v.label] for v in layout.spec.vertices if v.kind == INPUT)
        assert inputs * n == board._lib.spinn_emu_injected(board._emu), (inputs, n)
    assert kinds == {1, 2, 4, 5, 6, 7}, kinds


def test_tiles_are_placed_by_the_rows_they_send(rng, monkeypatch):
    """The builder hands the toolchain's placer the vertices by the rows they send, so that
    a row band's tiles of consecutive layers share a chip: the packets of a chain of
    row-banded convolutions cross fewer chip-to-chip links (counted by the emulator) than
    with the vertices layer by layer, and the results stay bit-exact."""
    from tvm_spinn.machine import builder
    from tvm_spinn.machine.graph import INPUT, OUTPUT

    ops = [_conv(rng, 8, 3, 3)] + [_conv(rng, 8, 8, 3, inputs=(i,)) for i in range(5)]
    shape, n = (3, 48, 16), 4
    x = rng.normal(size=(n,) + shape).astype(np.float32)
    q = quantize_graph(OpGraph(ops, [shape]), x)
    plan = plan_graph(q, res.SPINN_5, 20_000, True)
    hops = {}
    for by_rows in (True, False):
        monkeypatch.setattr(builder, "PLACE_BY_ROWS", by_rows)
        layout = build_machine_graph(plan)
        kinds = [v.kind for v in layout.spec.vertices]
        assert kinds[0] == INPUT and kinds[-1] == OUTPUT
        program = make_program("t", plan, layout, map_graph(layout.spec))
        assert len({c.placement[:2] for c in program.cores}) > 3, "the chain must span several chips"
        board = EmulatedBoard(program)
        y = board.run(q.quantize_input(x).reshape(n, -1))
        np.testing.assert_array_equal(y, integer_reference(program, x))
        hops[by_rows] = int(board.router_counters()[1].sum())
    assert hops[True] < 0.7 * hops[False], hops
