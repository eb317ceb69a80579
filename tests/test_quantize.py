"""Quantisation arithmetic: the tanh table's error, requantisation, the proofs the
kernels rely on (int32 blocks, partial-sum shifts), and the stated error bound."""
import numpy as np
import pytest

from tvm_spinn.errors import CalibrationError, ResourceError
from tvm_spinn.graph import OpGraph, float_forward
from tvm_spinn.graph.ops import DenseLayer
from tvm_spinn.quantization import error_bound, graph_reference, quantize_graph
from tvm_spinn.quantization.fixed_point import Q_MAX, TANH_TABLE_ERROR_LSB, activate, round_shift, tanh_q, tanh_table
from tvm_spinn.tiling import resources as res
from tvm_spinn.tiling.dense import INT32_MAX, X_MAX, accumulation_block, plan_layer
from tvm_spinn.tiling.planner import GraphPlan, plan_graph


def quantize_network(layers, calibration):
    """A chain of dense layers quantised by the one quantiser."""
    return quantize_graph(OpGraph(list(layers), [(1, 1, layers[0].in_features)]), calibration)


def reference_forward(plan, x_q):
    (y,) = graph_reference(plan.tiled_ops(), [x_q], plan.qgraph.input_shapes, plan.qgraph.outputs)
    return y.reshape(y.shape[0], -1)


def dequantize_output(q, y):
    return y.astype(np.float32) * np.float32(q.output_scale)


def float_result(q, x):
    y = float_forward([o.op for o in q.ops], x.reshape((-1,) + q.input_shape))[q.outputs[0]]
    return y.reshape(y.shape[0], -1)


def test_tanh_table_error_over_every_int16_input():
    v = np.arange(-32768, 32768, dtype=np.int64)
    exact = np.tanh(v / 4096.0) * Q_MAX
    err = np.abs(tanh_q(v, tanh_table()) - exact)
    assert err.max() <= TANH_TABLE_ERROR_LSB, err.max()
    assert np.all(np.diff(tanh_q(v, tanh_table())) >= 0), "tanh must stay monotone"


def test_sigmoid_via_tanh_over_every_int16_input():
    v = np.arange(-32768, 32768, dtype=np.int64)  # Q3.12 of x / 2
    exact = Q_MAX / (1 + np.exp(-(v / 2048.0)))
    err = np.abs(activate("sigmoid", v) - exact)
    assert err.max() <= TANH_TABLE_ERROR_LSB / 2 + 1, err.max()
    assert activate("sigmoid", v).min() >= 0 and activate("sigmoid", v).max() <= Q_MAX


def test_round_shift_is_round_half_up():
    v = np.array([-6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6], np.int64)
    np.testing.assert_array_equal(round_shift(v, 1), np.floor(v / 2 + 0.5).astype(np.int64))
    np.testing.assert_array_equal(round_shift(v, 0), v)


def _layer(rng, k, n, act="none", scale=1.0):
    return DenseLayer(rng.normal(0, scale / np.sqrt(k), (n, k)).astype(np.float32),
                      rng.normal(0, 0.1, n).astype(np.float32), act, f"dense ({k}->{n}, {act})")


def test_requantisation_multiplier_is_precise_and_in_range(rng):
    q = quantize_network([_layer(rng, 784, 300, "relu")], rng.normal(size=(200, 784)))
    layer = q.ops[0]
    m_true = layer.in_scale * layer.weight_scale / layer.target_scale
    m_used = layer.multiplier * 2.0 ** -layer.shift.astype(float)
    assert np.all(np.abs(m_used / m_true - 1) < 2.0 ** -(layer.m_bits - 1))
    assert np.all(layer.multiplier < 2 ** layer.m_bits)
    # |acc * M| < 2**62 for every reachable acc: requantisation cannot overflow int64.
    assert layer.acc_bound * int(layer.multiplier.max()) < 2 ** 62


def test_accumulation_block_proof_holds_for_the_worst_input(rng):
    w = rng.integers(-Q_MAX, Q_MAX + 1, size=(40, 101)).astype(np.int16)
    w[3, 10] = Q_MAX
    block = accumulation_block(w)
    padded = np.concatenate([np.abs(w.astype(np.int64)), np.zeros((40, -101 % block), np.int64)], axis=1)
    assert (padded.reshape(40, -1, block).sum(axis=2) * X_MAX).max() <= INT32_MAX
    small = (rng.integers(-300, 301, size=(8, 64))).astype(np.int16)
    assert accumulation_block(small) >= 64  # small weights allow long int32 blocks


def test_partial_shift_keeps_partial_sums_in_int32(rng):
    q = quantize_network([_layer(rng, 3000, 16)], rng.normal(size=(50, 3000)))
    lp = plan_layer(q.ops[0], 1, 2)
    for c0, c1 in zip(lp.col_bounds[:-1], lp.col_bounds[1:]):
        worst = np.abs(lp.layer.weight[:, c0:c1].astype(np.int64)).sum(axis=1).max() * X_MAX
        assert (worst + (1 << max(lp.partial_shift - 1, 0))) >> lp.partial_shift < 2 ** 31


def test_error_bound_holds_and_errors_are_small(rng):
    layers = [_layer(rng, 100, 80, "relu"), _layer(rng, 80, 60, "tanh"), _layer(rng, 60, 20, "sigmoid"),
              _layer(rng, 20, 7)]
    calib = rng.uniform(-2, 2, size=(300, 100)).astype(np.float32)
    q = quantize_network(layers, calib)
    # Column tiles (partial sums + reducers) and odd-sized row tiles in every layer.
    plan = GraphPlan(q, [plan_layer(layer, 3, 3) for layer in q.ops], res.SPINN_5, None)
    (bound,) = error_bound(plan.tiled_ops(), q.input_scales, q.input_max_abs, q.outputs)
    # The bound's premise: every tensor stays inside its calibrated range.
    y = dequantize_output(q, reference_forward(plan, q.quantize_input(calib)))
    err = np.abs(y - float_result(q, calib))
    assert np.all(err <= bound)
    assert err.max() < 0.01 * np.abs(float_result(q, calib)).max()
    # New samples may exceed a calibrated range and saturate there; the rest stay accurate.
    x = rng.uniform(-2, 2, size=(500, 100)).astype(np.float32)
    err = np.abs(dequantize_output(q, reference_forward(plan, q.quantize_input(x))) - float_result(q, x))
    assert np.median(err) < 1e-3 and np.mean(err <= bound) > 0.99


def test_calibration_errors(rng):
    layers = [_layer(rng, 10, 4)]
    with pytest.raises(CalibrationError, match="calibration data"):
        quantize_network(layers, None)
    with pytest.raises(CalibrationError, match=r"shape \(samples, 10\)"):
        quantize_network(layers, np.zeros((5, 11)))
    with pytest.raises(CalibrationError, match="NaN"):
        quantize_network(layers, np.full((5, 10), np.nan))


def test_too_big_for_the_board_names_the_layer(rng):
    layers = [DenseLayer(np.ones((2048, 4096), np.float32), None, "relu", "big (4096->2048)")] * 5
    q = quantize_network(layers[:1], rng.normal(size=(4, 4096)))
    q.ops = q.ops * 5
    with pytest.raises(ResourceError, match=r"too big for the board.*big \(4096->2048\)"):
        plan_graph(q, board=res.SPINN_5)
