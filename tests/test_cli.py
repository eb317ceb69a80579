"""The command line (python -m tvm_spinn), driven as a user would, through subprocesses,
and a quiet, quick ``import tvm_spinn``."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tvm_spinn", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An MLP (and a host op) saved as .pt2 (dynamic batch) and .onnx, calibration, inputs and torch's outputs."""
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4),
                                torch.nn.GELU()).eval()  # GELU stays on the host
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    np.save(d / "calib.npy", x.numpy())
    np.save(d / "x.npy", x[:10].numpy().astype(np.float64))  # numpy's default dtype
    exported = torch.export.export(model, (x[:4],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(exported, str(d / "mlp.pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x[:4],), str(d / "mlp.onnx"), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    return d, model(x[:10]).detach().numpy()


@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_compile_run_report(files, kind):
    d, y_torch = files
    proc = _run("compile", f"mlp.{kind}", "-c", "calib.npy", "-o", f"mlp_{kind}.so", cwd=d)
    offload = "2 of 3 ops on SpiNNaker; on the host: 1 x nn.gelu"
    assert offload in proc.stdout and f"written mlp_{kind}.so" in proc.stdout
    proc = _run("run", f"mlp_{kind}.so", "x.npy", "-o", f"y_{kind}.npy", "--plot", f"plots_{kind}", cwd=d)
    assert "10 samples on" in proc.stdout and "packets/inference" in proc.stdout
    # the call's plots: placement with link load, per-layer figures, a tiling per layer on cores
    written = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith(f"written plots_{kind}")]
    assert [Path(w).name for w in written[:2]] == ["placement.png", "layers.png"] and len(written) == 4, written
    assert all((d / w).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for w in written)
    y = np.load(d / f"y_{kind}.npy")
    assert y.shape == (10, 4) and y.dtype == np.float32
    assert np.abs(y - y_torch).max() < 0.01 * (y_torch.max() - y_torch.min())
    if kind == "pt2":  # report reads a module, whatever it came from: once is enough
        return
    proc = _run("report", f"mlp_{kind}.so", "--plot", "report_plots", "--format", "svg", cwd=d)
    assert offload in proc.stdout  # from the record compile wrote beside the module
    assert "cores: 4 (2 kernel + 2 live IO)" in proc.stdout
    assert "board (function 1 (dense" in proc.stdout  # the record keeps the functions' titles
    # nothing ran: placement and tiling only, as SVG
    assert sorted(p.name for p in (d / "report_plots").iterdir()) == ["placement.svg", "tiling_0_dense_1.svg",
                                                                      "tiling_1_dense_2.svg"]
    assert b"<svg" in (d / "report_plots" / "placement.svg").read_bytes()[:500]


def test_errors_are_one_line_with_exit_codes(files):
    d, _ = files
    proc = _run("compile", "missing.onnx", "-c", "calib.npy", cwd=d, check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "tvm-spinn: error: missing.onnx: no such file"
    (d / "notes.txt").write_text("hello")
    proc = _run("compile", "notes.txt", "-c", "calib.npy", cwd=d, check=False)
    assert proc.returncode == 1 and "unknown model kind '.txt'" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run("run", "mlp.onnx", "x.npy", "-o", "y.npy", cwd=d, check=False)  # not a module
    assert proc.returncode == 1 and "not an exported module" in proc.stderr and "Traceback" not in proc.stderr
    (d / "broken.so").write_bytes(b"\x7fELF broken")
    proc = _run("run", "broken.so", "x.npy", "-o", "y.npy", cwd=d, check=False)
    assert proc.returncode == 1 and "broken.so cannot be loaded" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = _run("run", "broken.so", "x.np", "-o", "y.npy", cwd=d, check=False)  # a missing input: before the module
    assert proc.returncode == 1 and proc.stderr.strip() == "tvm-spinn: error: input x.np: no such file"
    proc = _run("run", "mlp.onnx", cwd=d, check=False)  # arguments missing: argparse's usage error
    assert proc.returncode == 2 and "usage:" in proc.stderr
    proc = _run("--debug", "compile", "missing.onnx", "-c", "calib.npy", cwd=d, check=False)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    # before any work: a missing output directory (was: the linker's error after the build), the
    # calibration files one per input, the new options' values
    proc = _run("compile", "mlp.pt2", "-c", "calib.npy", "-o", "no/such/dir/m.so", cwd=d, check=False)
    assert proc.returncode == 1 and "output no/such/dir/m.so: the directory" in proc.stderr \
        and "does not exist" in proc.stderr and "INFO" not in proc.stderr
    proc = _run("compile", "mlp.pt2", "-c", "calib.npy", "calib.npy", cwd=d, check=False)
    assert proc.returncode == 1 and "mlp.pt2 takes 1 input(s) (input), given 2 calibration file(s)" in proc.stderr
    proc = _run("bench", "--models", "nope", cwd=d, check=False)  # bench_board's options, without "--" too
    assert proc.returncode == 2 and "tvm-spinn bench: error: argument --models: invalid choice: 'nope'" in proc.stderr
    for option in (["--replicas", "0"], ["--replicas", "many"], ["--input-bits", "7"]):
        proc = _run("compile", "mlp.pt2", "-c", "calib.npy", *option, cwd=d, check=False)
        assert proc.returncode == 2 and f"argument {option[0]}" in proc.stderr


def test_compile_with_copies_and_8bit_input(files):
    """--replicas and --input-bits reach the build: the module holds two copies taking int8."""
    import tvm
    import tvm_spinn

    d, y_torch = files
    _run("compile", "mlp.pt2", "-c", "calib.npy", "-o", "mlp_r2.so", "--replicas", "2", "--input-bits", "8", cwd=d)
    proc = _run("run", "mlp_r2.so", "x.npy", "-o", "y_r2", cwd=d)  # numpy adds .npy: the line names it
    assert "10 samples on" in proc.stdout and "written y_r2.npy: (10, 4) float32" in proc.stdout
    y = np.load(d / "y_r2.npy")
    assert np.abs(y - y_torch).max() < 0.03 * (y_torch.max() - y_torch.min())  # int8 input: coarser
    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(d / "mlp_r2.so")), tvm.cpu())
    (e,) = tvm_spinn.executors(vm)
    assert e.program.replicas == 2 and {i.format.name for i in e.program.inputs} == {"int8"}


def test_import_is_quiet_and_lazy_and_registers_with_tvm():
    """No warning on import (stderr empty under -W error); TVM is not imported until used,
    and importing it afterwards still registers the spinnaker target and pipeline."""
    code = ("import sys, tvm_spinn; assert 'tvm' not in sys.modules and 'torch' not in sys.modules; "
            "import tvm; from tvm.relax.pipeline import PIPELINE_MAP; assert 'spinnaker' in PIPELINE_MAP; "
            "tvm.target.Target('spinnaker'); assert tvm_spinn.report.model_report and tvm_spinn.zoo.LeNet5; "
            "print('ok')")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok" and proc.stderr == "", proc.stderr


def test_from_torch_is_quiet():
    import tvm_spinn

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tvm_spinn.from_torch(torch.nn.Linear(4, 2), torch.randn(3, 4))
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []
