"""Real models: every model builds, the board takes what it can, and results are right.

One named test per kind of fault found by trying published small networks and random
models (the smallest case of each kind). Each test builds through the public API and
checks: bit for bit against the integer reference (every board run), within 0.1% of the
output range of TVM's llvm build, and what the offload report says went where.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from torch import nn
from tvm import relax

import tvm_spinn
from tvm_spinn import report


def build_and_check(model: nn.Module, shape, record_board_io, *, n: int = 64, strict: bool = False,
                    seed: int = 0, **options):
    """Build ``model`` for SpiNNaker, run it on its calibration samples, and check it against
    llvm (0.1% of the output range) and every board run against the integer reference.
    Returns (executable, vm, outputs)."""
    torch.manual_seed(seed)
    model = model.eval()
    x = torch.randn((n,) + tuple(shape), generator=torch.Generator().manual_seed(seed)).numpy()
    mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))
    ex = tvm_spinn.build(mod, calibration=x, strict=strict, **options)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x))
    ys = [out.numpy()] if hasattr(out, "numpy") else [v.numpy() for v in out]
    ref = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())["main"](tvm.runtime.tensor(x))
    refs = [ref.numpy()] if hasattr(ref, "numpy") else [v.numpy() for v in ref]
    for y, r in zip(ys, refs):
        assert y.shape == r.shape
        assert np.abs(y - r).max() <= 1e-3 * max(np.abs(r).max(), 1e-6), (np.abs(y - r).max(), np.abs(r).max())
    by_board = {id(e.board): e for e in tvm_spinn.executors(vm)}
    for board, x_q, y_q in record_board_io:
        if id(board) in by_board:
            np.testing.assert_array_equal(y_q, tvm_spinn.integer_reference(by_board[id(board)].program, x_q))
    return ex, vm, ys


def on_host(ex) -> list:
    return [op for op, _ in ex.spinnaker_offload.host]


# --- kind 1: functions with several outputs or inputs, or shapes the board does not take

class TwoResults(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 6), nn.Linear(6, 4)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc2(h), h


class Fire(nn.Module):
    def __init__(self):
        super().__init__()
        self.squeeze, self.e1, self.e3 = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 5, 1), nn.Conv2d(4, 5, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.e1(h)), torch.relu(self.e3(h))], 1)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.a(x)
        return y + self.b(F.relu6(y))


class Residual(nn.Module):
    """outer(a + b(inner(a))) with a = the first conv of x: the residual forms of the issue."""

    def __init__(self, a: nn.Module, b: nn.Module, inner=nn.Identity(), outer=nn.Identity()):
        super().__init__()
        self.a, self.b, self.inner, self.outer = a, b, inner, outer

    def forward(self, x):
        a = self.a(x)
        return self.outer(a + self.b(self.inner(a)))


def GeluResidual() -> nn.Module:  # noqa: N802 - a model, named like one
    return Residual(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, padding=1), inner=nn.GELU())


def AddThenSigmoid() -> nn.Module:  # noqa: N802
    return Residual(nn.Conv1d(1, 1, 1), nn.Conv1d(1, 1, 1), outer=nn.Sigmoid())


def ResidualRelu6() -> nn.Module:  # noqa: N802
    return Residual(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, padding=1), outer=nn.ReLU6())


def test_kind1_a_function_with_two_results_runs_on_the_board(record_board_io):
    ex, vm, ys = build_and_check(TwoResults(), (8,), record_board_io, strict=True)
    (program,) = report.programs(ex)
    assert len(program.result_shapes) == 2 and on_host(ex) == []


def test_kind1_fire_module_with_its_concat_runs_on_the_board(record_board_io):
    ex, vm, ys = build_and_check(Fire(), (3, 6, 6), record_board_io, strict=True)
    assert [op for _, op in ex.spinnaker_offload.board][-1] == "spinnaker.concat2" and on_host(ex) == []
    (program,) = report.programs(ex)
    assert [lay.cores for lay in program.layers if lay.kind == "Concat"] == [0], "a concat is routing only"


def test_kind1_a_function_with_two_inputs_runs_on_the_board(record_board_io):
    ex, vm, ys = build_and_check(TwoInputs(), (3, 5, 5), record_board_io, strict=True)
    assert sorted(len(p.input_shapes) for p in report.programs(ex)) == [1, 2]  # arguments (live inputs may be more)
    assert on_host(ex) == ["clip"]


def test_kind1_residual_around_a_host_op(record_board_io):
    ex, vm, ys = build_and_check(GeluResidual(), (3, 5, 5), record_board_io, strict=True)
    assert on_host(ex) == ["nn.gelu"]
    assert "3 of 4 ops on SpiNNaker; on the host: 1 x nn.gelu" in report.offload_report(ex)


def test_kind1_linear_over_tokens_builds_and_says_why_it_stays_on_the_host(record_board_io, caplog):
    with caplog.at_level(logging.INFO, logger="tvm_spinn"):
        ex, vm, ys = build_and_check(nn.Linear(64, 32), (99, 64), record_board_io)
    assert "matmul" in on_host(ex)
    assert any("0 of" in r.getMessage() and "on the host" in r.getMessage() for r in caplog.records)


# --- kind 2: many offloaded functions share the board's live IO

@pytest.mark.parametrize("n, act", [(4, nn.SiLU), (16, nn.GELU)], ids=["4_silu", "16_gelu"])
def test_kind2_many_functions_on_one_board(n, act, record_board_io):
    # a host op between board ops splits them into functions (LeakyReLU, the example,
    # runs on the board now: it would make one function)
    model = nn.Sequential(*[m for _ in range(n) for m in (nn.Linear(16, 16), act())])
    ex, vm, ys = build_and_check(model, (16,), record_board_io, strict=True)
    assert len(tvm_spinn.executors(vm)) == n


# --- kinds 3 to 7: partitioner, planner and builder agree

class AddToItself(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 3, 1)

    def forward(self, x):
        y = self.c(x)
        return y + y


class DenseResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 2), nn.Linear(2, 2)

    def forward(self, x):
        y = self.a(x)
        return self.b(y) + y


def test_kind3_residual_add_then_sigmoid(record_board_io):
    ex, vm, ys = build_and_check(AddThenSigmoid(), (1, 4), record_board_io, strict=True)
    assert on_host(ex) == [], "the add tile computes tanh and sigmoid too"


def test_kind4_a_tensor_added_to_itself(record_board_io):
    ex, vm, ys = build_and_check(AddToItself(), (2, 4, 4), record_board_io, strict=True)


def test_kind5_residual_add_of_dense_outputs(record_board_io):
    ex, vm, ys = build_and_check(DenseResidual(), (4,), record_board_io, strict=True)
    assert on_host(ex) == []


def test_kind6_a_producer_band_nothing_reads(record_board_io):
    model = nn.Sequential(nn.Conv2d(4, 16, 2), nn.AvgPool2d(1, 1), nn.Conv2d(16, 20, 1, stride=3))
    build_and_check(model, (4, 8, 16), record_board_io, strict=True, cycle_budget=2000)
    build_and_check(nn.Sequential(nn.Conv2d(4, 16, 2), nn.Conv2d(16, 20, 1, stride=3)), (4, 8, 16),
                    record_board_io, strict=True, cycle_budget=2000)


class PadRows(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(6, 7, 1)

    def forward(self, x):
        return self.c(F.pad(x, (0, 2, 2, 1)))


def test_kind7_a_row_band_entirely_in_padding(record_board_io):
    build_and_check(PadRows(), (6, 2, 18), record_board_io, strict=True, cycle_budget=1500)


# --- kind 8: too big across several functions

def test_kind8_too_big_across_functions_is_a_clear_error_or_stays_on_the_host(record_board_io):
    # five offloaded functions (split by the GELUs on the host) of about 172 cores each
    model = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(2048, 2048), nn.GELU())], nn.Linear(2048, 2048))
    x = torch.randn(4, 2048).numpy()
    mod = tvm_spinn.from_torch(model.eval(), (torch.from_numpy(x[:2]),))
    with pytest.raises(tvm_spinn.ResourceError, match=r"too big for the board.*functions need"):
        tvm_spinn.build(mod, calibration=x, strict=True)
    ex = tvm_spinn.build(mod, calibration=x)
    assert ex.spinnaker_offload.refused and all("host" in why or "too big" in why
                                                for why in ex.spinnaker_offload.refused.values())
    y = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(y, model(torch.from_numpy(x)).detach().numpy(), atol=2e-3, rtol=0)


# --- kind 9: no silent saturation

class OnesMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 8), nn.Linear(8, 4)
        for layer in (self.a, self.b):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_kind9_headroom_keeps_values_beyond_the_calibration_set_and_saturation_is_counted(caplog):
    model = OnesMLP().eval()
    calib = np.random.default_rng(0).uniform(0, 1, size=(256, 16)).astype(np.float32)
    mod = tvm_spinn.from_torch(model, (torch.from_numpy(calib[:2]),))
    vm = relax.VirtualMachine(tvm_spinn.build(mod, calibration=calib), tvm.cpu())
    x = np.full((1, 16), 0.99, np.float32)  # every hidden value beyond its calibrated maximum
    y = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(y, 8 * 16 * 0.99, rtol=2e-3)
    assert tvm_spinn.statistics(vm).saturated == 0
    # Far beyond the headroom: clipped inside the board, counted per tensor and warned.
    with caplog.at_level(logging.WARNING, logger="tvm_spinn"):
        vm["main"](tvm.runtime.tensor(np.full((3, 16), 2.5, np.float32)))
    stats = tvm_spinn.statistics(vm)
    assert stats.saturated_values and all(n > 0 for n in stats.saturated_values.values())
    # the warning names the tensors by the model's modules
    assert any("saturated" in r.getMessage() and "a (Linear 16->8, relu)" in r.getMessage() for r in caplog.records)
    # Without headroom, the example of the issue clips silently no more: it is counted.
    vm0 = relax.VirtualMachine(tvm_spinn.build(mod, calibration=calib, headroom=1.0), tvm.cpu())
    y0 = vm0["main"](tvm.runtime.tensor(x)).numpy()
    assert np.all(y0 < 0.9 * 8 * 16 * 0.99) and tvm_spinn.statistics(vm0).saturated > 0


def test_kind9_degenerate_calibration_is_warned(caplog):
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    mod = tvm_spinn.from_torch(model, (torch.randn(2, 4),))
    with caplog.at_level(logging.WARNING, logger="tvm_spinn"):
        tvm_spinn.build(mod, calibration=np.zeros((8, 4), np.float32))
        tvm_spinn.build(mod, calibration=np.ones((1, 4), np.float32))
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "zero on every calibration sample" in text and "one calibration sample" in text
    with pytest.raises(ValueError, match="headroom=0.5"):  # an argument error, before any work
        tvm_spinn.build(mod, calibration=np.ones((8, 4), np.float32), headroom=0.5)


# --- kind 10: a function called several times per inference

class TinyRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.i, self.h, self.o = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.zeros(x.shape[0], 8)
        for t in range(x.shape[1]):  # gelu stays on the host: the board cell is called per step
            h = F.gelu(self.i(x[:, t]) + self.h(h))
        return self.o(h)


def test_kind10_a_function_called_per_time_step(record_board_io):
    ex, vm, ys = build_and_check(TinyRNN(), (5, 4), record_board_io, strict=True)
    step = [p for p in report.programs(ex) if p.calls_per_inference == 5]
    assert len(step) == 1, "one offloaded cell, called at each of the 5 time steps"
    # Every call of the inference is counted: 5 x (4*8 + 8*8) + 8*3 MACs per sample.
    assert tvm_spinn.statistics(vm).macs == 64 * (5 * (4 * 8 + 8 * 8) + 8 * 3)


# --- kind 11: negative select indices reach TVM's importer as correct indices

class LastStep(nn.Module):
    def forward(self, x):
        return torch.tanh(x)[:, -1]


class PickRows(nn.Module):  # the sibling: a constant index tensor with negative entries
    def forward(self, x):
        return x[:, [-1, 0]] * 2


def test_kind11_negative_select_matches_torch():
    x = torch.randn(2, 3, 4)
    for model in (LastStep(), PickRows()):
        mod = tvm_spinn.from_torch(model, (x,))
        y = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())["main"](tvm.runtime.tensor(x.numpy()))
        np.testing.assert_allclose(y.numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)
    gru = nn.GRU(4, 6, batch_first=True).eval()

    class LastState(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = gru

        def forward(self, x):
            return self.gru(x)[1][-1]

    x = torch.randn(3, 5, 4)
    mod = tvm_spinn.from_torch(LastState(), (x,))
    y = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())["main"](tvm.runtime.tensor(x.numpy()))
    np.testing.assert_allclose(y.numpy(), LastState()(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(tvm_spinn.UnsupportedError, match="symbolic"):
        tvm_spinn.from_torch(LastBatchRow(), (torch.randn(2, 3),))


class LastBatchRow(nn.Module):
    def forward(self, x):
        return x[-1]


# --- kind 12: a static batch calibrates with any number of samples

def test_kind12_static_batch_calibration(record_board_io):
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    x = torch.randn(50, 6)
    mod = tvm_spinn.from_torch(model, (x[:4],), dynamic_batch=False)
    vm = relax.VirtualMachine(tvm_spinn.build(mod, calibration=x.numpy(), strict=True), tvm.cpu())
    y = vm["main"](tvm.runtime.tensor(x[:4].numpy())).numpy()
    np.testing.assert_allclose(y, model(x[:4]).detach().numpy(), atol=2e-3 * float(np.abs(y).max()))


# --- ops people's models use

class TwoScales(nn.Module):
    """A concat of branches whose ranges differ 50x: one int16 scale for both."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(6, 3, 1)
        with torch.no_grad():
            self.a.weight.mul_(50)

    def forward(self, x):
        return self.c(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1))


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 1)
        self.s = nn.Parameter(torch.rand(1, 4, 1, 1) + 0.5)
        self.t = nn.Parameter(torch.randn(1, 4, 1, 1))

    def forward(self, x):
        return torch.relu(self.c(x) * self.s + self.t)


def _random_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


@pytest.mark.parametrize("name, model, shape", [
    ("batchnorm1d_after_linear", _random_bn(nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(),
                                                          nn.Linear(6, 2))), (5,)),
    ("channel_scale_and_shift", Scaled(), (3, 5, 5)),
    ("adaptive_avg_pool_2d", nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                           nn.Linear(4, 2)), (3, 6, 6)),
    ("adaptive_avg_pool_1d", nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                                           nn.Linear(4, 2)), (3, 9)),
    ("concat_of_different_ranges", TwoScales(), (3, 5, 5)),
    ("relu6_mlp", nn.Sequential(nn.Linear(5, 8), nn.ReLU6(), nn.Linear(8, 3), nn.Hardtanh(-0.5, 0.5)), (5,)),
    ("leaky_relu_conv", nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.2), nn.Conv2d(4, 2, 1),
                                      nn.LeakyReLU(0.01)), (3, 6, 6)),
    ("residual_add_then_relu6", ResidualRelu6(), (3, 5, 5)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_ops_people_use_run_on_the_board(name, model, shape, record_board_io):
    ex, vm, ys = build_and_check(model, shape, record_board_io, strict=True)
    assert on_host(ex) == [], ex.spinnaker_offload.line()


class InputResidual(nn.Module):
    """Residuals around the model's input and a concat with it (DenseNet-like)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = x + self.a(x)
        y = y + self.b(y)
        return torch.tanh(self.c(torch.cat([x, y], 1)))


def test_residual_and_concat_around_the_model_input_run_on_the_board(record_board_io):
    ex, vm, ys = build_and_check(InputResidual(), (4, 5, 6), record_board_io, strict=True)
    assert on_host(ex) == [] and len(tvm_spinn.executors(vm)) == 1


# --- everyday mistakes and precision limits: said, never a raw traceback, never silent

def test_calibration_is_converted_or_refused_clearly():
    mod = tvm_spinn.from_torch(nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval(),
                               (torch.randn(2, 16),))
    ex = tvm_spinn.build(mod, calibration=np.random.default_rng(0).standard_normal((64, 16)))  # float64
    vm = relax.VirtualMachine(ex, tvm.cpu())
    assert vm["main"](tvm.runtime.tensor(np.zeros((0, 16), np.float32))).numpy().shape == (0, 4)  # empty batch
    for bad, match in [(np.zeros((64, 15)), r"expected shape \(samples, 16\) float32.*received \(64, 15\) float64"), (np.zeros(16), "shape"),
                       (np.zeros((0, 16)), "non-empty")]:
        with pytest.raises(tvm_spinn.CalibrationError, match=match):
            tvm_spinn.build(mod, calibration=bad)


def test_models_the_importer_cannot_take_are_clear_errors():
    with pytest.raises(tvm_spinn.UnsupportedError, match="importer cannot import.*float64 parameters.*model.float"):
        tvm_spinn.from_torch(nn.Linear(16, 8).double(), (torch.randn(2, 16, dtype=torch.float64),))
    with pytest.raises(tvm_spinn.UnsupportedError, match="importer cannot import.*adaptive_max_pool2d"):
        tvm_spinn.from_torch(nn.Sequential(nn.Conv2d(2, 4, 3), nn.AdaptiveMaxPool2d(1)), (torch.randn(2, 2, 10, 10),))


def test_results_that_int16_resolves_coarsely_are_warned(caplog):
    torch.manual_seed(0)
    narrow = nn.Sequential(nn.Linear(16, 4), nn.Sigmoid()).eval()  # outputs barely move around 0.5
    narrow[0].weight.data *= 0.01
    far = nn.Linear(16, 4).eval()  # outputs far from zero
    far.bias.data += 500
    calib = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    for model in (narrow, far):
        with caplog.at_level(logging.WARNING, logger="tvm_spinn"):
            tvm_spinn.build(tvm_spinn.from_torch(model, (torch.randn(2, 16),)), calibration=calib)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "tanh / sigmoid outputs are fixed" in text and "values far from zero lose precision" in text


def test_a_dead_relu_is_not_a_saturation():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    model[0].bias.data.fill_(-100.0)
    x = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    vm = relax.VirtualMachine(tvm_spinn.build(tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),)),
                                              calibration=x), tvm.cpu())
    assert np.all(vm["main"](tvm.runtime.tensor(x)).numpy() == 0)
    assert tvm_spinn.statistics(vm).saturated == 0


class TensorAndItsFlatten(nn.Module):
    """One function returns a tensor and its flatten (the same values twice, which one output
    gatherer cannot decode); another function, after a host GELU, is fine."""

    def __init__(self):
        super().__init__()
        self.c, self.fc = nn.Conv2d(2, 3, 1), nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        h = torch.relu(self.c(x))
        return h, h.flatten(1), self.fc(F.gelu(h.flatten(1)))


def test_a_fault_of_one_function_keeps_only_that_function_on_the_host(record_board_io):
    ex, vm, ys = build_and_check(TensorAndItsFlatten(), (2, 4, 4), record_board_io)
    (why,) = ex.spinnaker_offload.refused.values()
    assert "the same values" in why
    assert [op for _, op in ex.spinnaker_offload.board] == ["spinnaker.dense_bias"]
