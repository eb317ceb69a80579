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
from tvm_spinn.errors import LostSamplesError
from tvm_spinn.runtime import executors, replicas, timing
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


@pytest.fixture(scope="module")
def builds(cnn):
    """copies -> the small CNN's executable with that many copies (1 and 3), built once."""
    mod, x = cnn
    return {r: tvm_spinn.build(mod, calibration=x, strict=True, replicas=r) for r in (1, 3)}


def _run(mod, x, ex=None, **options):
    ex = ex if ex is not None else tvm_spinn.build(mod, calibration=x, strict=True, **options)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    with EmulatedBoard.recording() as seen:
        y = vm["main"](tvm.runtime.tensor(x)).numpy()
    (executor,) = executors(vm)
    return y, executor.program, seen, tvm_spinn.statistics(vm)


def test_copies_give_the_results_of_one_copy_bit_for_bit(cnn, builds):
    mod, x = cnn
    y1, p1, _, s1 = _run(mod, x, builds[1])
    y3, p3, seen, s3 = _run(mod, x, builds[3])
    assert p1.replicas == 1 and p3.replicas == 3
    assert {inp.replica for inp in p3.inputs} == {0, 1, 2}
    assert len(p3.cores) == 3 * len(p1.cores)
    np.testing.assert_array_equal(y3, y1)
    ((_, x_q, y_q),) = seen  # the board's own int16 output against the integer reference
    assert x_q.shape[0] == 7 and y_q.shape[0] == 7
    np.testing.assert_array_equal(y_q, integer_reference(p3, x_q))
    assert s3.timed.samples == 7 and s3.samples == 7
    assert s3.copies == 3 and "(3 copies)" in s3.summary() and s1.copies == 1 and "copies" not in s1.summary()
    assert {c.label.split(".")[0] for c in p3.cores} == {"r0", "r1", "r2"}  # each copy on its own cores


def test_auto_takes_the_copies_with_the_best_modelled_throughput_and_bad_values_are_refused(cnn, builds):
    """replicas="auto" maps a few copy counts (the most that fit, halving down to one) and
    keeps the one the timed emulation gives the best throughput (the fewest copies within 2%
    of it): at least what one copy or two give."""
    from tvm_spinn.runtime import copies

    mod, x = cnn
    y, p, _, stats = _run(mod, x[:2], tvm_spinn.build(mod, calibration=x, strict=True, replicas="auto"))
    assert 1 <= p.replicas <= 16 and p.n_cores <= 808
    np.testing.assert_array_equal(y, _run(mod, x[:2], builds[1])[0])
    rate = copies.modelled_throughput(p)
    for n in (1, 2):
        other = executors(relax.VirtualMachine(tvm_spinn.build(mod, calibration=x, strict=True, replicas=n),
                                               tvm.cpu()))[0].program
        assert rate >= (1 - copies.TIE) * copies.modelled_throughput(other), n
    for bad in (0, -1, 2.5, "many", True, 17):  # 17: more copies than a function has live inputs
        with pytest.raises(ValueError, match="replicas="):
            tvm_spinn.build(mod, calibration=x, replicas=bad)


def test_the_copy_counts_auto_tries_and_keeps():
    from tvm_spinn.runtime import copies

    assert copies.candidates(16) == [16, 8, 4, 2, 1] and copies.candidates(3) == [3, 2, 1]
    assert copies.candidates(5) == [5, 3, 2, 1] and copies.candidates(1) == [1]
    # three boards: also counts that split evenly over them (16 would put 6, 5 and 5 on them)
    assert copies.candidates(16, 3) == [16, 15, 9, 8, 6, 4, 3, 2, 1]
    assert copies.candidates(9, 3) == [9, 6, 5, 3, 2, 1] and copies.candidates(2, 3) == [2, 1]
    assert copies.best([(3, 191.0, 0), (2, 265.0, 0), (1, 189.0, 0)]) == 2
    assert copies.best([(16, 1049.0, 0), (8, 1200.0, 0), (4, 1190.0, 0), (2, 1196.0, 0), (1, 1158.0, 0)]) == 2
    assert copies.best([(3, 300.0, 12), (2, 265.0, 0), (1, 189.0, 0)]) == 2  # a count that drops loses
    assert copies.best([(2, 265.0, 5), (1, 189.0, 7)]) == 2 and copies.best([(1, 10.0, 0)]) == 1
    # a count the emulator could not run (-1) is the slowest, never the drop-free choice
    assert copies.best([(3, -1.0, 0), (2, 265.0, 5), (1, 189.0, 7)]) == 2
    assert copies.best([(3, -1.0, 0), (2, -1.0, 0)]) == 3


def test_the_runtime_chooses_autos_copies():
    """The package root installs the runtime's chooser for the codegen (a later stage's call:
    tvm_spinn.hooks), once TVM is imported (as here)."""
    from tvm_spinn import hooks

    assert hooks.copies_chooser is not None and hooks.copies_chooser.__name__ == "choose"


def test_without_the_runtimes_chooser_auto_maps_the_most_that_fit(cnn, monkeypatch):
    """The codegen alone (no chooser installed): the most copies that map, as before."""
    from tvm_spinn import hooks

    mod, x = cnn
    monkeypatch.setattr(hooks, "copies_chooser", None)
    _, p, _, _ = _run(mod, x[:2], tvm_spinn.build(mod, calibration=x, strict=True, replicas="auto"))
    assert p.replicas == 16  # the emulator's live inputs per function bound the small CNN


def test_auto_skips_counts_that_do_not_map_and_says_why_when_none_does():
    from tvm_spinn.codegen.codegen import mapped_counts
    from tvm_spinn.errors import MappingError, ResourceError

    def build(n):
        if n > 8:
            raise ResourceError(f"{n} copies: too many cores")
        return None if n == 4 else [f"program x{n}"]

    assert list(mapped_counts(build, [16, 8, 4, 2])) == [(8, ["program x8"]), (2, ["program x2"])]

    def never(n):
        raise MappingError(f"{n} copies: the toolchain failed")

    with pytest.raises(MappingError, match="1 copies"):
        list(mapped_counts(never, [2, 1]))


def test_auto_judges_the_whole_model(monkeypatch):
    """With several offloaded functions a count is judged by the model's rate (each function
    in turn a sample, a function called twice counts twice), not by one function's."""
    from types import SimpleNamespace
    from tvm_spinn.runtime import copies

    rates = {"f1": (1000.0, 0), "f2": (500.0, 3)}
    monkeypatch.setattr(copies, "timed_run", lambda p: rates[p.name])
    f1, f2 = SimpleNamespace(name="f1", calls_per_inference=1), SimpleNamespace(name="f2", calls_per_inference=2)
    rate, drops = copies.model_run([f1, f2])
    assert rate == pytest.approx(1 / (1 / 1000 + 2 / 500)) and drops == 3


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


# -- a last, partial group of copies: only its live copies are sent and waited for ----------

N = 3  # copies in the tests below; batches 1, N - 1 and N + 1 leave the last group partial


def test_live_copies_of_each_group():
    assert replicas.live_copies(7, 3).tolist() == [3, 3, 1]
    assert replicas.live_copies(6, 3).tolist() == [3, 3]
    assert replicas.live_copies(1, 16).tolist() == [1]
    assert replicas.live_copies(0, 3).tolist() == []
    assert replicas.lost_samples([2], 3, 7) == [6]  # a partial group's lost samples: its live ones
    assert replicas.lost_samples([0, 2], 3, 8) == [0, 1, 2, 6, 7]


@pytest.mark.parametrize("batch", [1, N - 1, N + 1])
def test_partial_group_bit_exact_and_costs_only_its_samples(cnn, builds, batch):
    """A partial last group: the results of one copy and of the integer reference, bit for
    bit; the host injects the packets of `batch` samples (counted by the emulator: as many
    as one copy takes) and the cores send what `batch` samples need, no more."""
    mod, x = cnn
    y1, p1, _, s1 = _run(mod, x[:batch], builds[1])
    y3, p3, seen, s3 = _run(mod, x[:batch], builds[N])
    np.testing.assert_array_equal(y3, y1)
    ((_, x_q, y_q),) = seen
    np.testing.assert_array_equal(y_q, integer_reference(p3, x_q))
    one_sample = sum(inp.packets(p3.in_features) for inp in p3.inputs if inp.replica == 0)
    assert s3.packets_injected == s1.packets_injected == batch * one_sample == batch * p1.input_packets()
    assert s3.packets_sent_by_cores == s1.packets_sent_by_cores  # each copy runs the same kernels
    assert s3.provenance["released"] == 0 and s3.provenance["markers_in"] == 0  # no core timed out


def test_one_sample_on_copies_pays_for_one_sample(cnn, builds):
    """Host-link bytes and time of 1 sample on N copies: one sample's (a full group's per
    sample; the copies cut their input as one copy alone may not), and no lost-sample timeout
    is waited for (the group is complete when its live copy's results are in)."""
    from tvm_spinn.machine.graph import LOST_TIMEOUT_TICKS
    from tvm_spinn.runtime.timing import TICK_S

    mod, x = cnn
    _, _, _, full = _run(mod, x[:N], builds[N])
    _, p, _, one = _run(mod, x[:1], builds[N])
    assert one.timed.bytes_in * N == full.timed.bytes_in and one.timed.messages_in * N == full.timed.messages_in
    assert one.timed.bytes_in == timing.program_in_bytes(p)  # the statistics' own figure per sample
    assert one.packets_injected * N == full.packets_injected
    assert one.timed.would_time_out == 0 and one.timed.samples == 1
    assert one.timed.latency_s < full.timed.latency_s < LOST_TIMEOUT_TICKS * TICK_S
    assert one.modelled_energy_j < full.modelled_energy_j * N  # its work only, not the group's


def test_partial_group_lost_samples_name_only_the_lost(cnn, builds):
    """A stopped core in copy N - 1: every full group is lost, and the partial last group,
    which does not use that copy, comes back exact (not waited for, not lost)."""
    mod, x = cnn
    x = x[:N + 1]
    vm = relax.VirtualMachine(builds[N], tvm.cpu())
    (e,) = executors(vm)
    ref = tvm_spinn.integer_reference(e.program, x)
    e.board.stop_core(next(c.label for c in e.program.cores if c.label.startswith(f"r{N - 1}.")))
    with pytest.raises(LostSamplesError) as info:
        vm["main"](tvm.runtime.tensor(x))
    assert info.value.lost == list(range(N))
    np.testing.assert_array_equal(e.last_lost.partial[N:], ref[N:])
    assert not e.last_lost.partial[:N].any()
    e.board.stop_core(e.program.cores[0].label)  # copy 0 carries every group, the partial one too
    with pytest.raises(LostSamplesError) as info:
        vm["main"](tvm.runtime.tensor(x))
    assert info.value.lost == list(range(N + 1))


def test_partial_groups_on_the_board_double(cnn, builds, double):
    """The real-board runtime sends only the live copies' datagrams and completes the group
    on their results (no sample timeout): bit for bit the emulator, one sample's packets and
    bytes for one sample."""
    from tests.test_board import on

    mod, x = cnn
    batches = (1, N - 1, N + 1)
    y_emu = {b: on("emulator", builds[N], x[:b])[1] for b in batches}
    vm, _, (e,) = on(double, builds[N], x[:N])  # (the executable's functions move to the double)
    assert type(e.board).__name__ == "BoardView"
    full = e.last_stats
    for batch in batches:
        y = vm["main"](tvm.runtime.tensor(x[:batch])).numpy()
        np.testing.assert_array_equal(y, y_emu[batch])
        prov = e.last_stats.provenance
        assert prov.get("samples_timed_out", 0) == 0 and prov["datagrams_sent"] > 0
        assert e.last_stats.packets_injected * N == full.packets_injected * batch
        assert prov["bytes_sent"] * N == full.provenance["bytes_sent"] * batch
    tvm_spinn.use_board(vm, "emulator")
