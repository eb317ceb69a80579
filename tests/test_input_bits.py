"""8-bit input (tvm_spinn.build(input_bits=8)): four values a packet on the host link, stored
as int16 by the first layer's cores, so the board stays bit-exact against the integer
reference while the host sends half the packets (and, but for the EIEIO headers, half the
bytes) per sample."""
import logging

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import tvm_spinn
from tvm_spinn import integer_reference, zoo
from tvm_spinn.quantization import input_format
from tvm_spinn.runtime import executors, timing
from tvm_spinn.runtime.emulator import EmulatedBoard
from tests.test_board import double, on  # noqa: F401  (the board double fixture)


def _images(n: int, shape, seed: int) -> np.ndarray:
    """Image-like 8-bit data as ToTensor gives it: pixel levels k / 255, the calibration
    reaching both ends of the format."""
    x = np.random.default_rng(seed).integers(0, 256, size=(n,) + shape)
    x[0].flat[0], x[0].flat[1] = 255, 0
    return (x / 255.0).astype(np.float32)


def _llvm(mod, x) -> np.ndarray:
    ex = tvm.compile(mod, target="llvm")
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _run(mod, x, input_bits):
    ex = tvm_spinn.build(mod, calibration=x, strict=True, input_bits=input_bits)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    with EmulatedBoard.recording() as seen:
        y = vm["main"](tvm.runtime.tensor(x)).numpy()
    ((_, x_q, y_q),) = seen
    (e,) = executors(vm)
    return ex, y, x_q, y_q, e.program, tvm_spinn.statistics(vm)


@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    x = _images(8, (1, 28, 28), 1)
    mod = tvm_spinn.from_torch(zoo.LeNet5().eval(), (torch.from_numpy(x[:2]),))
    return mod, x, {bits: _run(mod, x, bits) for bits in (16, 8)}


def test_lenet5_on_8bit_images_is_exact_and_halves_the_host_link(lenet):
    mod, x, runs = lenet
    _, y16, _, _, p16, s16 = runs[16]
    _, y8, x_q, y_q, p8, s8 = runs[8]
    # pixels k / 255 travel as k: uint8, lossless
    assert {inp.format.name for inp in p8.inputs} == {"uint8"} and {inp.packing for inp in p16.inputs} == {0}
    np.testing.assert_array_equal(x_q.reshape(x.shape), np.rint(x * 255).astype(np.int16))
    np.testing.assert_array_equal(y_q, integer_reference(p8, x_q))
    ref = _llvm(mod, x)
    span = float(ref.max() - ref.min())
    for y in (y8, y16):
        assert np.abs(y - ref).max() <= 1e-3 * span
    # counted, not computed: the packets the host injected and the bytes it sent
    assert s8.packets_injected * 2 == s16.packets_injected == 8 * 28 * 28 // 2
    assert s8.timed.bytes_in == 8 * timing.program_in_bytes(p8)  # the C count, the formula
    overhead = timing.IN_MSG_OVERHEAD_BYTES
    assert 2 * (s8.timed.bytes_in - overhead * s8.timed.messages_in) == \
        s16.timed.bytes_in - overhead * s16.timed.messages_in
    assert s8.timed.bytes_in < 0.6 * s16.timed.bytes_in
    # the first convolution's tiles take whole 8-bit quads on their remembered rows, not the
    # receive's general path (which every 8-bit packet took, about 1,000 cycles more each)
    first = [c for label, c in _core_counters(runs[8]).items() if label.startswith("L0")]
    assert sum(c["packets_in"] for c in first) > 0
    assert sum(c["rx_general"] for c in first) < 0.2 * sum(c["packets_in"] for c in first)


def _core_counters(run) -> dict:
    """The per-core counters of a _run's board."""
    ex, *_ = run
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = np.zeros((8, 1, 28, 28), np.float32)
    vm["main"](tvm.runtime.tensor(x))
    (e,) = executors(vm)
    return e.board.core_counters()


def test_lenet5_8bit_on_the_board_double(lenet, double):  # noqa: F811
    """The real-board runtime encodes 8-bit samples with the same codec: the same results."""
    _, x, runs = lenet
    ex = runs[8][0]
    _, y_emu, _ = on("emulator", ex, x)
    vm, y_board, (e,) = on(double, ex, x)
    assert type(e.board).__name__ == "BoardView" and e.program.inputs[0].packing == input_format.PACK_UINT8
    np.testing.assert_array_equal(y_board, y_emu)
    tvm_spinn.use_board(vm, "emulator")


def test_mlp_with_signed_input_and_an_odd_row(caplog):
    """Signed data takes int8; 30 features end in a padded quad (30 = 7 x 4 + 2). It is not
    8-bit data, so the build says what input_bits=8 rounds it to."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5)).eval()
    x = np.random.default_rng(2).standard_normal((9, 30)).astype(np.float32)
    mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))
    _, y16, _, _, _, s16 = _run(mod, x, 16)
    with caplog.at_level(logging.WARNING, logger="tvm_spinn"):
        _, y8, x_q, y_q, p8, s8 = _run(mod, x, 8)
    assert "input 0 is not 8-bit data, and input_bits=8 rounds it to int8 steps of" in caplog.text
    assert p8.inputs[0].format is input_format.INT8
    assert x_q.min() >= -128 and x_q.max() <= 127 and np.abs(x_q).max() == 127
    np.testing.assert_array_equal(y_q, integer_reference(p8, x_q))
    assert s8.packets_injected == 9 * 8 and s16.packets_injected == 9 * 15
    ref = model(torch.from_numpy(x)).detach().numpy()
    # int8 rounds each input by at most half a step (1/127 of its range); through the two
    # layers (relu: 1-Lipschitz) that moves an output by at most half a step times the
    # layers' largest absolute row sums, plus what int16 costs elsewhere
    w1, w2 = (np.abs(m.weight.detach().numpy()).sum(1).max() for m in (model[0], model[2]))
    err16 = np.abs(y16 - ref).max()
    assert np.abs(y8 - ref).max() <= 0.5 * p8.input_scales[0] * w1 * w2 + 2 * err16
    assert np.abs(y8 - ref).max() > err16  # the coarser input shows


def test_input_bits_is_checked():
    mod = tvm_spinn.from_torch(torch.nn.Linear(4, 2).eval(), (torch.zeros(2, 4),))
    for bad in (4, 12, True, "8"):
        with pytest.raises(ValueError, match="input_bits="):
            tvm_spinn.build(mod, calibration=np.zeros((2, 4), np.float32), input_bits=bad)


def test_8bit_data_is_on_the_grid_and_other_data_is_not():
    """What the build's "not 8-bit data" warning measures: pixels k / 255 in float32 lie on
    uint8's grid; N(0, 1) data is rounded by up to half an int8 step."""
    pixels = (np.arange(256) / 255.0).astype(np.float32)
    assert input_format.UINT8.off_grid(pixels, 1 / 255) < 1e-3
    normal = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    scale = input_format.INT8.scale(np.abs(normal).max())
    assert 0.45 < input_format.INT8.off_grid(normal, scale) <= 0.5


def test_saturation_of_8bit_input_is_counted():
    """Values beyond the calibrated range clip to the 8-bit format, and are counted."""
    fmt = input_format.UINT8
    x = np.array([-1.0, 0.0, 0.5, 1.0, 1.01, 2.0])
    np.testing.assert_array_equal(fmt.quantize(x, 1 / 255), [0, 0, 128, 255, 255, 255])
    assert fmt.saturated(x, 1 / 255) == 3
    assert input_format.INT8.saturated(np.array([-1.01, -1.0, 1.0]), 1 / 127) == 0  # -128 is in range
