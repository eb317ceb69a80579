"""Around the happy path (issue 12): progress and Ctrl-C, threads and lifetime, the early
"too big" refusal, and errors that say what to do."""
import gc
import logging
import re
import signal
import threading
import time
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

import tvm_spinn
from tvm_spinn import progress
from tvm_spinn.codegen import pipeline
from tvm_spinn.runtime.board.address import parse_board_address
from tvm_spinn.tiling.dense import choose_tiling
from tvm_spinn.tiling.planner import fewest_cores


@pytest.fixture(scope="module")
def mlp():
    """A small MLP, its Relax module, its executable and calibration data."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 4)).eval()
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))
    return model, mod, tvm_spinn.build(mod, calibration=x), x


def _emulator(vm):
    (executor,) = tvm_spinn.executors(vm)
    return executor.board


# --- item 1: progress and interruption

def test_ctrl_c_stops_a_run_and_leaves_the_board_ready():
    """SIGINT from a timer thread stops a long emulated run with KeyboardInterrupt long before
    it would end (the emulator took far fewer samples than the batch), and the next call on
    the same VM is exact."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 8 * 8, 10)).eval()
    x = np.random.default_rng(0).standard_normal((32, 1, 16, 16)).astype(np.float32)
    ex = tvm_spinn.build(tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),)), calibration=x, strict=True)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    want = vm["main"](tvm.runtime.tensor(x)).numpy()
    big = np.tile(x, (1200, 1, 1, 1))  # 38,400 samples: seconds on the emulator
    main = threading.main_thread().ident
    timer = threading.Timer(0.5, signal.pthread_kill, (main, signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        vm["main"](tvm.runtime.tensor(big))
    took = time.perf_counter() - start
    board = _emulator(vm)
    done = board._lib.spinn_emu_progress(board._emu)
    assert 0 < done < len(big) // 2, (done, took)  # cut short, not run to the end
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), want)


def test_a_model_that_cannot_fit_is_refused_before_calibration(monkeypatch):
    """An 8192 x 8192 layer: with strict, a ResourceError naming the layer, the cores it needs
    at least and the board's, and what to do, raised before the calibration capture runs;
    without, it stays on the host and the model runs there."""
    n = 8192
    model = nn.Sequential(nn.Linear(n, n), nn.ReLU()).eval()
    x = np.random.default_rng(0).standard_normal((4, n)).astype(np.float32)
    mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))
    captured = []
    real_capture = pipeline.capture_values
    monkeypatch.setattr(pipeline, "capture_values", lambda *a: captured.append(1) or real_capture(*a))
    with pytest.raises(tvm_spinn.ResourceError,
                       match=r"layer 0 \(Linear 8192->8192, relu\) alone needs at least ([\d,]+) cores.*808 application "
                             r"cores.*smaller.*strict=False") as info:
        tvm_spinn.build(mod, calibration=x, strict=True)
    assert captured == []
    said = int(re.search(r"at least ([\d,]+) cores", str(info.value)).group(1).replace(",", ""))
    layer = SimpleNamespace(weight=SimpleNamespace(shape=(n, n)), activation="relu", name="dense0")
    r, c = choose_tiling(layer, 1, None)  # the planner's fewest cores (DTCM only)
    assert 808 < said <= r * c + r
    ex = tvm_spinn.build(mod, calibration=x)  # not strict: on the host, with a warning
    y = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(y, model(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-4)
    assert tvm_spinn.executors(ex) == []


@pytest.mark.parametrize("n,k", [(784, 300), (300, 100), (1000, 1000), (4096, 4096), (10, 3), (3, 2000)])
def test_the_early_core_count_is_a_lower_bound(n, k):
    layer = SimpleNamespace(weight=np.zeros((n, k)), activation="tanh", name="d")
    r, c = choose_tiling(layer, 1, None)
    total, _ = fewest_cores([SimpleNamespace(weight=np.zeros((n, k)), name="d")], 1)
    assert total - 2 <= r * c + (r if c > 1 else 0)


def test_progress_bars_are_on_stderr_after_a_delay_and_can_be_turned_off(monkeypatch, capsys):
    monkeypatch.setattr(progress, "DELAY_S", 0.2)
    slow = lambda: time.sleep(0.5) or 7  # noqa: E731
    monkeypatch.setenv(progress.PROGRESS_ENV, "1")
    assert progress.interruptible(slow, lambda: None, lambda: 3, 5, "work") == 7
    assert "work" in capsys.readouterr().err
    monkeypatch.setenv(progress.PROGRESS_ENV, "0")
    progress.interruptible(slow, lambda: None, lambda: 3, 5, "work")
    assert "work" not in capsys.readouterr().err
    monkeypatch.setenv(progress.PROGRESS_ENV, "1")
    logging.getLogger("tvm_spinn").setLevel(logging.ERROR)  # silenced
    try:
        progress.interruptible(slow, lambda: None, lambda: 3, 5, "work")
    finally:
        logging.getLogger("tvm_spinn").setLevel(logging.NOTSET)
    assert "work" not in capsys.readouterr().err
    monkeypatch.setenv(progress.PROGRESS_ENV, "maybe")
    with pytest.raises(ValueError, match="TVM_SPINN_PROGRESS='maybe'.*0"):
        progress.bar(1)


# --- item 2: threads and lifetime

def test_four_threads_share_one_vm(mlp):
    _, _, ex, x = mlp
    vm = relax.VirtualMachine(ex, tvm.cpu())
    want = vm["main"](tvm.runtime.tensor(x)).numpy()
    errors, results = [], []

    def work(k):
        try:
            for _ in range(25):
                results.append(np.array_equal(vm["main"](tvm.runtime.tensor(x[: 8 + k])).numpy(), want[: 8 + k]))
        except Exception as exc:  # noqa: BLE001  (collected for the assert)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 100 and all(results)


def test_statistics_are_per_vm(mlp):
    _, _, ex, x = mlp
    vm_a, vm_b = relax.VirtualMachine(ex, tvm.cpu()), relax.VirtualMachine(ex, tvm.cpu())
    vm_a["main"](tvm.runtime.tensor(x[:5]))
    vm_b["main"](tvm.runtime.tensor(x[:9]))
    assert tvm_spinn.statistics(vm_a).samples == 5 and tvm_spinn.statistics(vm_b).samples == 9
    assert tvm_spinn.statistics(ex).samples == 9  # the executable's: its last call


def test_executors_die_with_their_executables(mlp):
    _, mod, _, x = mlp
    ex = tvm_spinn.build(mod, calibration=x)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    vm["main"](tvm.runtime.tensor(x))
    (executor,) = tvm_spinn.executors(vm)
    gone = weakref.ref(executor)
    del executor, vm, ex
    gc.collect()
    assert gone() is None


# --- item 4: errors that say what to do

def test_calibration_of_the_wrong_shape_or_dtype_says_calibration(mlp):
    _, mod, _, _ = mlp
    with pytest.raises(tvm_spinn.CalibrationError, match=r"calibration: expected shape \(samples, 16\) float32 "
                                                         r"for main's input .*, received \(8, 15\) float32"):
        tvm_spinn.build(mod, calibration=np.zeros((8, 15), np.float32))
    with pytest.raises(tvm_spinn.CalibrationError, match=r"expected shape \(samples, 16\) float32.*received "
                                                         r"\(8, 16\) complex64"):
        tvm_spinn.build(mod, calibration=np.zeros((8, 16), np.complex64))
    with pytest.raises(tvm_spinn.CalibrationError, match="calibration is of type int: pass an array"):
        tvm_spinn.build(mod, calibration=5)
    with pytest.raises(tvm_spinn.CalibrationError, match=r"of type str.*load it first: np.load\(path\)"):
        tvm_spinn.build(mod, calibration="calib.npy")


def test_float64_is_converted_with_a_warning_and_an_empty_batch_is_empty(mlp, caplog):
    _, mod, ex, x = mlp
    with caplog.at_level(logging.WARNING, logger="tvm_spinn"):
        ex64 = tvm_spinn.build(mod, calibration=x.astype(np.float64))
    assert "calibration is float64" in caplog.text
    vm, vm64 = relax.VirtualMachine(ex, tvm.cpu()), relax.VirtualMachine(ex64, tvm.cpu())
    want = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(vm64["main"](tvm.runtime.tensor(x)).numpy(), want)  # same scales
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tvm_spinn"):
        for _ in range(2):
            y = vm["main"](tvm.runtime.tensor(x.astype(np.float64))).numpy()
            assert y.dtype == np.float32
            np.testing.assert_array_equal(y, want)
    assert caplog.text.count("float64") == 1  # the first time only
    assert vm["main"](tvm.runtime.tensor(x[:0])).numpy().shape == (0, 4)


def test_build_arguments_are_checked_first(mlp):
    _, mod, _, x = mlp
    for kwargs, error, match in [({"cycle_budget": -1}, ValueError, "cycle_budget=-1: pass a positive number"),
                                 ({"cycle_budget": float("nan")}, ValueError, "cycle_budget"),
                                 ({"cycle_budget": "fast"}, TypeError, "cycle_budget"),
                                 ({"headroom": 0.5}, ValueError, "headroom=0.5"),
                                 ({"percentile": 0}, ValueError, "percentile=0"),
                                 ({"strict": "yes"}, TypeError, "strict='yes': pass True or False"),
                                 ({"fuse_pools": None}, TypeError, "fuse_pools"),
                                 ({"board": "spinn9"}, ValueError, "board='spinn9'.*spinn5")]:
        with pytest.raises(error, match=match):
            tvm_spinn.build(mod, calibration=x, **kwargs)


@pytest.mark.parametrize("value", ["", "  ", "EMULATOR", "Emulator", None])
def test_board_variable_empty_or_emulator_means_the_emulator(value):
    assert parse_board_address(value).kind == "emulator"


def test_a_loaded_module_checks_its_inputs_as_a_fresh_build_does(tmp_path, caplog):
    """main's inputs travel in the exported module (BoardProgram.main_inputs): a VM of the
    loaded module converts float64 and says "input" for a wrong shape, a batch the inputs
    disagree on, or a wrong number of inputs, where TVM would raise its match_cast errors."""
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(3, 4)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((8, 6)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)
    mod = tvm_spinn.from_torch(TwoInputs().eval(), (torch.from_numpy(x[:2]), torch.from_numpy(y[:2])))
    tvm_spinn.build(mod, calibration=[x, y], strict=True).export_library(str(tmp_path / "m.so"))
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(tmp_path / "m.so")), tvm.cpu())
    want = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y)).numpy()
    with caplog.at_level(logging.WARNING, logger="tvm_spinn"):
        got = vm["main"](tvm.runtime.tensor(x.astype(np.float64)), tvm.runtime.tensor(y)).numpy()
    np.testing.assert_array_equal(got, want)
    assert "input 'x' of main is float64" in caplog.text
    with pytest.raises(tvm_spinn.InputError, match=r"input 'y' of main: expected shape \(batch, 3\) float32, "
                                                   r"received \(8, 4\) float32"):
        vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(np.zeros((8, 4), np.float32)))
    with pytest.raises(tvm_spinn.InputError, match="input 'y' of main: its batch is 5, input 'x' has 8"):
        vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y[:5]))
    with pytest.raises(tvm_spinn.InputError, match=r"main takes 2 input\(s\) \(x, y\), received 1"):
        vm["main"](tvm.runtime.tensor(x))
