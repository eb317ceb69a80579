"""Copies of a model on one machine (tvm_spinn.build(replicas=...)): the runtime spreads a
batch over them, the results are those of one copy, bit for bit, and the timed emulation
counts samples, not groups of them."""
import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import tvm_spinn
from tvm_spinn import integer_reference
from tvm_spinn.runtime import executors
from tvm_spinn.runtime.emulator import EmulatedBoard
from tests.test_board import double  # noqa: F401  (the board double fixture)


def _small_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10)).eval()


@pytest.fixture(scope="module")
def cnn():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 1, 12, 12)).astype(np.float32)  # 7: not a multiple of the copies
    return tvm_spinn.from_torch(_small_cnn(), (torch.from_numpy(x[:2]),)), x


def _run(mod, x, **options):
    ex = tvm_spinn.build(mod, calibration=x, strict=True, **options)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    with EmulatedBoard.recording() as seen:
        y = vm["main"](tvm.runtime.tensor(x)).numpy()
    (executor,) = executors(vm)
    return y, executor.program, seen, tvm_spinn.statistics(vm)


def test_copies_give_the_results_of_one_copy_bit_for_bit(cnn):
    mod, x = cnn
    y1, p1, _, s1 = _run(mod, x)
    y3, p3, seen, s3 = _run(mod, x, replicas=3)
    assert p1.replicas == 1 and p3.replicas == 3
    assert {inp.replica for inp in p3.inputs} == {0, 1, 2}
    assert len(p3.cores) == 3 * len(p1.cores)
    np.testing.assert_array_equal(y3, y1)
    ((_, x_q, y_q),) = seen  # the board's own int16 output against the integer reference
    assert x_q.shape[0] == 7 and y_q.shape[0] == 7
    np.testing.assert_array_equal(y_q, integer_reference(p3, x_q))
    assert s3.timed.samples == 7 and s3.samples == 7
    assert {c.label.split(".")[0] for c in p3.cores} == {"r0", "r1", "r2"}  # each copy on its own cores


def test_auto_fills_the_machine_and_bad_values_are_refused(cnn):
    mod, x = cnn
    _, p, _, stats = _run(mod, x[:2], replicas="auto")
    assert 1 < p.replicas <= 16 and p.n_cores <= 808
    for bad in (0, -1, 2.5, "many", True, 17):  # 17: more copies than a function has live inputs
        with pytest.raises(ValueError, match="replicas="):
            tvm_spinn.build(mod, calibration=x, replicas=bad)


def test_copies_on_the_board_double(cnn, double):
    """The real-board runtime groups samples as the emulator does: the same results."""
    from tests.test_board import on

    mod, x = cnn
    ex = tvm_spinn.build(mod, calibration=x, strict=True, replicas=2)
    _, y_emu, _ = on("emulator", ex, x)
    vm, y_board, (e,) = on(double, ex, x)
    assert type(e.board).__name__ == "BoardView" and e.program.replicas == 2
    np.testing.assert_array_equal(y_board, y_emu)
    tvm_spinn.use_board(vm, "emulator")


def test_timed_figures_count_samples_not_groups():
    """With copies the board runs groups of samples (one per copy); the timed run's samples,
    throughput and window text count the caller's samples (was: "latency (1 sample(s), all
    in flight" for 16 samples on 16 copies)."""
    from tvm_spinn.runtime import timing

    totals = np.zeros(14, np.uint64)
    totals[0] = 10 ** 9  # 1 ms
    args = (np.zeros(2, np.uint64), np.full(2, 10 ** 9, np.uint64), totals, {}, {}, {}, {}, 0, {})
    run = timing.summarise(2, *args, n_slots=4, replicas=3, n_samples=5)
    assert run.samples == 5 and run.throughput_per_s == pytest.approx(5000)
    assert run.bottleneck.startswith("latency (5 sample(s), all in flight")
    run = timing.summarise(6, *(np.zeros(6, np.uint64), np.full(6, 10 ** 9, np.uint64)) + args[2:], n_slots=4,
                           replicas=3, n_samples=17)
    assert run.bottleneck.startswith("sample window (4 groups of 3 copies in flight") and run.samples == 17
