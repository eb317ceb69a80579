"""PyTorch -> TVM -> SpiNNaker (emulated SpiNN-5) -> Relax VM, against three references:
TVM's own llvm build (float32), each function's float layers, and the numpy integer
reference (bit for bit)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import tvm_spinn
from tvm_spinn.graph.extract import extract_graph
from tvm_spinn.partition import offloaded_functions

L = torch.nn.Linear


def mlp64():
    return torch.nn.Sequential(L(64, 128), L(128, 128), torch.nn.ReLU(), L(128, 10), torch.nn.Softmax(-1))


def board_filling_mlp():
    return torch.nn.Sequential(
        L(224, 50), torch.nn.ReLU(), L(50, 50), torch.nn.Softmax(-1), L(50, 300), torch.nn.Tanh(),
        L(300, 50), torch.nn.Sigmoid(), L(50, 25), L(25, 17), torch.nn.Softmax(-1))


def run_vm(ex, x):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm, vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x, np.float32))).numpy()


def llvm_reference(mod, x):
    return run_vm(tvm.compile(mod, target="llvm"), x)[1]


def lipschitz(layers):
    """Infinity-norm Lipschitz constant of a chain of float dense layers."""
    slope = {"none": 1.0, "relu": 1.0, "tanh": 1.0, "sigmoid": 0.25}
    return float(np.prod([np.abs(l.weight).sum(axis=1).max() * slope[l.activation] for l in layers]))


def check_functions(vm, calls, mod):
    """Per offloaded function: emulator == integer reference bit for bit, and the
    dequantised output within the stated bound of the float layers. Returns the
    composed end-to-end tolerance after the host softmax."""
    funcs = {str(f.attrs["global_symbol"]): f for f in offloaded_functions(tvm_spinn.partition_for_spinnaker(mod)).values()}
    by_board = {id(e.board): e for e in tvm_spinn.executors(vm)}
    tol_in = 0.0
    seen = 0
    for board, x_q, y_q in calls:
        ex = by_board.get(id(board))
        if ex is None:
            continue
        seen += 1
        program = ex.program
        np.testing.assert_array_equal(y_q, tvm_spinn.integer_reference(program, x_q))
        layers = extract_graph(funcs[ex.symbol]).ops
        x = x_q.astype(np.float64) * program.input_scale
        y_float = x.astype(np.float32)
        for layer in layers:
            y_float = layer.forward(y_float)
        err = np.abs(y_q.astype(np.float64) * program.output_scale - y_float)
        assert np.all(err <= program.error_bound + 1e-6), (ex.symbol, err.max(), program.error_bound.max())
        # The worst-case bound can be loose; the measured error must also be small: 0.1% of
        # the output range (about 1e-4 is typical).
        assert err.max() <= 1e-3 * np.abs(y_float).max(), (ex.symbol, err.max(), np.abs(y_float).max())
        # Error entering from the previous function (through the host softmax) plus this one's.
        tol_out = float(program.error_bound.max()) + lipschitz(layers) * tol_in
        tol_in = np.expm1(2 * tol_out)  # softmax: |d p| <= exp(2 max|d z|) - 1
    assert seen == len(tvm_spinn.executors(vm))
    return tol_in


@pytest.fixture(scope="module")
def random_inputs():
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(500, k, generator=gen).numpy() for k in (64, 224, 784)}


@pytest.mark.parametrize("make_model, k", [(mlp64, 64), (board_filling_mlp, 224)], ids=["mlp64", "board_filling"])
def test_thesis_models_bit_exact_and_close_to_llvm(make_model, k, random_inputs, record_board_io):
    torch.manual_seed(0)
    model = make_model().eval()
    x = random_inputs[k]
    mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))
    ex = tvm_spinn.build(mod, calibration=x)
    vm, y = run_vm(ex, x)
    y_llvm = llvm_reference(mod, x)
    tol = check_functions(vm, record_board_io, mod)
    assert np.abs(y - y_llvm).max() <= min(tol, 2e-3 * np.abs(y_llvm).max())
    np.testing.assert_allclose(y_llvm, model(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    # The int16 path is also accurate in practice, far inside the worst-case bound.
    assert (y.argmax(1) == y_llvm.argmax(1)).mean() >= 0.97
    # All offloaded functions of the model share one board, each core used once.
    programs = [e.program for e in tvm_spinn.executors(vm)]
    assert all(set(p.board_functions) == {q.symbol for q in programs} for p in programs)
    cores = [c.placement for p in programs for c in p.cores]
    assert len(cores) == len(set(cores))


@pytest.mark.parametrize("hidden", [(300, 100), (1024,)], ids=["mlp784_300_100_10", "wide784_1024"])
def test_large_layers(hidden, random_inputs, record_board_io):
    torch.manual_seed(1)
    sizes = (784,) + hidden + (10,)
    mods = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        mods += [L(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*mods[:-1]).eval()
    x = random_inputs[784]
    mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))
    ex = tvm_spinn.build(mod, calibration=x)
    vm, y = run_vm(ex, x)
    tol = check_functions(vm, record_board_io, mod)
    y_llvm = llvm_reference(mod, x)
    assert np.abs(y - y_llvm).max() <= min(tol, 2e-3 * np.abs(y_llvm).max())
    program = tvm_spinn.executors(vm)[0].program
    first = program.layers[0]
    assert first.row_tiles * first.col_tiles > 1, "a layer bigger than a core must be cut"


def test_digits_accuracy_int16_close_to_float():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.3, random_state=0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(L(64, 64), torch.nn.ReLU(), L(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    float_acc = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    ex = tvm_spinn.build(tvm_spinn.from_torch(model, (xt[:2],)), calibration=x_train[:300])
    _, y = run_vm(ex, x_test)
    int16_acc = (y.argmax(1) == y_test).mean()
    assert float_acc > 0.9
    assert abs(int16_acc - float_acc) <= 0.005, (float_acc, int16_acc)


@pytest.fixture(scope="module")
def small_model_and_ex():
    torch.manual_seed(3)
    model = torch.nn.Sequential(L(20, 30), torch.nn.Tanh(), L(30, 5)).eval()
    x = torch.randn(64, 20).numpy()
    mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))
    return model, mod, tvm_spinn.build(mod, calibration=x), x


@pytest.mark.parametrize("batch", [1, 7, 500])
def test_symbolic_batch(batch, small_model_and_ex):
    model, _, ex, _ = small_model_and_ex
    x = torch.randn(batch, 20, generator=torch.Generator().manual_seed(batch)).clamp(-2, 2).numpy()
    vm, y = run_vm(ex, x)
    assert y.shape == (batch, 5)
    program = tvm_spinn.executors(vm)[0].program
    np.testing.assert_array_equal(
        np.round(y / program.output_scale).astype(np.int16), tvm_spinn.integer_reference(program, x))
    assert tvm_spinn.statistics(vm).samples == batch


def test_tvm_compile_spelling_matches_build(small_model_and_ex):
    _, mod, ex, x = small_model_and_ex
    ex2 = tvm.compile(mod, target="spinnaker", relax_pipeline=relax.get_pipeline("spinnaker", calibration=x))
    np.testing.assert_array_equal(run_vm(ex, x)[1], run_vm(ex2, x)[1])


def test_export_and_load_in_fresh_process(small_model_and_ex, tmp_path):
    _, _, ex, x = small_model_and_ex
    lib = tmp_path / "model.so"
    ex.export_library(str(lib))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", run_vm(ex, x)[1])
    script = textwrap.dedent(f"""
        import numpy as np, tvm, tvm_spinn
        from tvm import relax
        ex = tvm.runtime.load_module({str(lib)!r})
        vm = relax.VirtualMachine(ex, tvm.cpu())
        y = vm["main"](tvm.runtime.tensor(np.load({str(tmp_path / 'x.npy')!r}))).numpy()
        assert np.array_equal(y, np.load({str(tmp_path / 'y.npy')!r})), "round trip changed the result"
        print("ok", tvm_spinn.statistics(vm).samples)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok 64" in out.stdout


def test_two_models_side_by_side(small_model_and_ex):
    model_a, _, ex_a, x_a = small_model_and_ex
    torch.manual_seed(4)
    model_b = torch.nn.Sequential(L(20, 30), torch.nn.Tanh(), L(30, 5)).eval()  # same structure, new weights
    mod_b = tvm_spinn.from_torch(model_b, (torch.from_numpy(x_a[:2]),))
    ex_b = tvm_spinn.build(mod_b, calibration=x_a)
    vm_a, vm_b = relax.VirtualMachine(ex_a, tvm.cpu()), relax.VirtualMachine(ex_b, tvm.cpu())
    xt = tvm.runtime.tensor(x_a)
    for _ in range(2):  # interleaved calls
        y_a, y_b = vm_a["main"](xt).numpy(), vm_b["main"](xt).numpy()
        np.testing.assert_allclose(y_a, model_a(torch.from_numpy(x_a)).detach().numpy(), atol=0.02)
        np.testing.assert_allclose(y_b, model_b(torch.from_numpy(x_a)).detach().numpy(), atol=0.02)
    assert np.abs(y_a - y_b).max() > 0.05


def test_missing_calibration_is_a_clear_error(small_model_and_ex):
    _, mod, _, _ = small_model_and_ex
    with pytest.raises(tvm_spinn.CalibrationError, match="calibration"):
        tvm_spinn.build(mod)


def test_wrong_calibration_shape_is_a_clear_error(small_model_and_ex):
    _, mod, _, _ = small_model_and_ex
    with pytest.raises(Exception, match=r"calibration|shape"):
        tvm_spinn.build(mod, calibration=np.zeros((4, 21), np.float32))


def test_wrong_input_shape_or_dtype_at_run_time(small_model_and_ex):
    _, _, ex, _ = small_model_and_ex
    vm = relax.VirtualMachine(ex, tvm.cpu())
    with pytest.raises(tvm_spinn.InputError, match=r"expected shape \(batch, 20\) float32, received \(3, 21\) float32"):
        vm["main"](tvm.runtime.tensor(np.zeros((3, 21), np.float32)))
    with pytest.raises(tvm_spinn.InputError, match=r"received \(3, 20\) int32.*astype\('float32'\)"):
        vm["main"](tvm.runtime.tensor(np.zeros((3, 20), np.int32)))


def test_model_too_big_for_the_board():
    layers = [L(4096, 4096), L(4096, 4096), L(4096, 4096)]
    model = torch.nn.Sequential(*layers).eval()
    x = torch.randn(8, 4096)
    mod = tvm_spinn.from_torch(model, (x[:2],))
    with pytest.raises(tvm_spinn.ResourceError, match=r"too big for the board: layer 0 \(Linear 4096->4096\) alone needs at least [\d,]+ cores"):
        tvm_spinn.build(mod, calibration=x.numpy(), strict=True)
