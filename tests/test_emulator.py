"""The emulated board on its own (no TVM): tilings with partial sums and reducers,
every activation, odd sizes; undefined-behaviour checking; router faults; and the
emulator's hop-by-hop routing against an independent route tracer."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dataclasses import replace

from tvm_spinn.codegen.codegen import make_program
from tvm_spinn.errors import EmulatorError
from tvm_spinn.graph import OpGraph
from tvm_spinn.graph.ops import DenseLayer
from tvm_spinn.machine.builder import build_machine_graph
from tvm_spinn.machine.graph import MappingResult
from tvm_spinn.machine.mapping import map_graph
from tvm_spinn.machine.mapping.routes import trace_route
from tvm_spinn.quantization import graph_reference, quantize_graph
from tvm_spinn.runtime import integer_reference
from tvm_spinn.runtime.emulator import EmulatedBoard
from tvm_spinn.tiling import resources as res
from tvm_spinn.tiling.dense import plan_layer
from tvm_spinn.tiling.planner import GraphPlan, plan_graph


def reference_forward(plan, x_q):
    """The integer reference of a tiled dense chain: int16 (n, out) from int16 x_q."""
    (y,) = graph_reference(plan.tiled_ops(), [x_q], plan.qgraph.input_shapes, plan.qgraph.outputs)
    return y.reshape(y.shape[0], -1)


def _network(seed, sizes, acts, tiling=None, board=res.SPINN_5):
    rng = np.random.default_rng(seed)
    layers = [DenseLayer(rng.normal(0, 1 / np.sqrt(k), (n, k)).astype(np.float32),
                         rng.normal(0, 0.2, n).astype(np.float32) if i % 2 == 0 else None, act, f"d{i}")
              for i, (k, n, act) in enumerate(zip(sizes[:-1], sizes[1:], acts))]
    calib = rng.normal(size=(200, sizes[0])).astype(np.float32)
    q = quantize_graph(OpGraph(layers, [(1, 1, sizes[0])]), calib)
    if tiling is None:
        plan = plan_graph(q, board)
    else:
        plan = GraphPlan(q, [plan_layer(l, r, c) for l, (r, c) in zip(q.ops, tiling)], board, None)
    layout = build_machine_graph(plan)
    program = make_program("test", plan, layout, map_graph(layout.spec))
    return plan, program, q, rng


@pytest.fixture(scope="module")
def tiled():
    # Odd sizes; layer 0 in 3x4 tiles (partial sums + 3 reducers), layer 1 in 2x1, layer 2 in 1x2.
    return _network(7, [37, 29, 15, 9, 4], ["relu", "tanh", "sigmoid", "none"],
                    tiling=[(3, 4), (2, 1), (1, 2), (1, 1)], board=res.SPINN_3)


def test_bit_exact_with_partial_sums_reducers_and_all_activations(tiled):
    plan, program, q, rng = tiled
    x = rng.normal(size=(300, 37)).astype(np.float32) * 1.5
    x_q = q.quantize_input(x)
    board = EmulatedBoard(program)
    y = board.run(x_q)
    np.testing.assert_array_equal(y, reference_forward(plan, x_q))
    np.testing.assert_array_equal(y, integer_reference(program, x_q))
    # Saturating inputs (every int16 extreme) stay exact too.
    extremes = rng.choice(np.array([-32768, 32767, 0], np.int16), size=(50, 37))
    np.testing.assert_array_equal(board.run(extremes), reference_forward(plan, extremes))


def test_emulator_runs_are_repeatable_and_independent_of_batching(tiled):
    plan, program, q, rng = tiled
    x_q = q.quantize_input(rng.normal(size=(64, 37)).astype(np.float32))
    board = EmulatedBoard(program)
    whole = board.run(x_q)
    parts = np.concatenate([board.run(x_q[i:i + 5]) for i in range(0, 64, 5)])
    np.testing.assert_array_equal(whole, parts)
    assert board.run(x_q[:0]).shape == (0, 4)


def test_link_counts_match_an_independent_route_tracer(tiled):
    plan, program, q, rng = tiled
    n = 20
    board = EmulatedBoard(program)
    board.reset_counters()
    board.run(q.quantize_input(rng.normal(size=(n, 37)).astype(np.float32)))
    mapping = MappingResult(program.placements, {}, program.routing_tables, {}, program.chips,
                            program.links, 17, 1023)
    counters = board.core_counters()
    expected = 0
    keys = {c.label: int(c.config[5] if c.kind == 1 else c.config[3]) for c in program.cores}
    for label, key in keys.items():
        cores, links = trace_route(mapping, program.placements[label][:2], key)
        assert cores, f"{label}'s packets reach no core"
        expected += counters[label]["packets_out"] * len(links)
    in_cores, in_links = trace_route(mapping, tuple(program.input.chip), program.input.key)
    expected += n * ((37 + 1) // 2) * len(in_links)
    _, links = board.router_counters()
    assert int(links.sum()) == expected
    assert all(c["dropped"] == 0 for c in counters.values())


def test_a_missing_routing_entry_is_an_error_not_wrong_numbers(tiled):
    plan, program, q, rng = tiled
    chip = tuple(program.input.chip)
    table = program.routing_tables[chip]
    key = program.input.key
    broken = replace(program, routing_tables=dict(program.routing_tables))
    broken.routing_tables[chip] = table[(key & table[:, 1]) != table[:, 0]]
    with pytest.raises(EmulatorError, match="matches no routing entry"):
        EmulatedBoard(broken).run(q.quantize_input(rng.normal(size=(2, 37)).astype(np.float32)))


def test_a_corrupt_config_region_is_rejected(tiled):
    plan, program, q, rng = tiled
    broken = replace(program, cores=[replace(c) for c in program.cores])
    broken.cores[0].config = program.cores[0].config[:8]  # truncated region
    with pytest.raises(EmulatorError, match="rejected its config"):
        EmulatedBoard(broken)


def test_no_undefined_behaviour_under_ubsan(tmp_path):
    """Run the kernels built with -fsanitize=undefined (aborts on UB) in a subprocess."""
    script = textwrap.dedent("""
        import numpy as np
        from tests.test_emulator import _network
        from tvm_spinn.runtime.emulator import EmulatedBoard
        from tests.test_emulator import reference_forward
        plan, program, q, rng = _network(11, [41, 33, 10, 6], ["relu", "sigmoid", "tanh"],
                                         tiling=[(2, 3), (1, 2), (1, 1)])
        x_q = np.concatenate([q.quantize_input(rng.normal(size=(100, 41)).astype(np.float32) * 3),
                              rng.choice(np.array([-32768, 32767], np.int16), size=(20, 41))])
        y = EmulatedBoard(program, ubsan=True).run(x_q)
        assert np.array_equal(y, reference_forward(plan, x_q))
        print("ubsan ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert out.returncode == 0 and "ubsan ok" in out.stdout, out.stderr[-3000:]
    assert "runtime error" not in out.stderr
