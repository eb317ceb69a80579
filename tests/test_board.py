"""The real-board runtime against the board double (``python -m tvm_spinn.board_double``,
started here as a user would): zoo models bit for bit against the emulator path, sessions,
a module exported and run in a fresh process, injected faults (lost datagrams, dropped
multicast packets, a stopped core) and the provenance read back from the cores.

Also the lost-sample path of the emulator itself: whatever is dropped, a sample comes
back either exact or named as lost, never silently wrong."""
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
from tvm_spinn import zoo
from tvm_spinn.errors import BoardError, LostSamplesError
from tvm_spinn.runtime.board import parse_board_address
from tvm_spinn.runtime.board.loader import binary_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {
    "mlp64": (zoo.mlp64, (64,)),
    "board_filling_mlp": (zoo.board_filling_mlp, (224,)),
    "lenet5": (zoo.LeNet5, (1, 28, 28)),
    "resnet8": (lambda: zoo.randomize_bn(zoo.ResNet8()), (3, 32, 32)),
}


@pytest.fixture(scope="module")
def double():
    """A board double in its own process; yields the TVM_SPINN_BOARD value it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "tvm_spinn.board_double"], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    line = proc.stdout.readline().strip()
    assert line.startswith("TVM_SPINN_BOARD=double://127.0.0.1:"), line
    yield line.split("=", 1)[1]
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def built():
    """name -> (executable, inputs), each zoo model built once."""
    out = {}
    for name, (make, shape) in MODELS.items():
        torch.manual_seed(0)
        model = make().eval()
        rng = np.random.default_rng(0)
        calib = rng.standard_normal((64,) + shape).astype(np.float32)
        x = rng.standard_normal((24,) + shape).astype(np.float32)
        out[name] = (tvm_spinn.build(tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),)), calibration=calib), x)
    return out


def on(board: str, ex, x, monkeypatch=None):
    """A VM of ``ex`` on ``board`` (a TVM_SPINN_BOARD value), its result on x, its executors.
    (An executable's functions open their board once; use_board moves them.)"""
    vm = relax.VirtualMachine(ex, tvm.cpu())
    tvm_spinn.use_board(vm, board)
    return vm, vm["main"](tvm.runtime.tensor(x)).numpy(), tvm_spinn.executors(vm)


def test_board_addresses():
    assert parse_board_address(None).kind == "emulator"
    assert parse_board_address(" EMULATOR ").kind == "emulator"
    assert parse_board_address("").kind == "emulator"
    a = parse_board_address("192.168.240.1")
    assert (a.kind, a.host) == ("host", "192.168.240.1")
    a = parse_board_address("spalloc://spinnaker.cs.man.ac.uk")
    assert (a.kind, a.host, a.port) == ("spalloc", "spinnaker.cs.man.ac.uk", 22244)
    assert parse_board_address("double://127.0.0.1:5000").port == 5000
    for bad, says in [("ftp://x", "unknown scheme"), ("double://127.0.0.1", "port is needed"),
                      ("spalloc://host:99999", "1..65535"), ("my board", "not a hostname")]:
        with pytest.raises(BoardError, match=says):
            parse_board_address(bad)


def test_missing_binaries_and_unreachable_board(tmp_path, monkeypatch, built):
    monkeypatch.setenv("TVM_SPINN_APLX_DIR", str(tmp_path))
    with pytest.raises(BoardError, match=r"dense_tile.aplx is not in .*make -C c_runtime SPINN_DIRS="):
        binary_path("dense_tile.aplx", need_file=True)
    assert binary_path("dense_tile.aplx", need_file=False) == "dense_tile.aplx"  # a double runs the host build
    assert os.path.isfile(binary_path("live_packet_gather.aplx", need_file=True))  # front-end-common's own
    ex, x = built["mlp64"]
    vm, y, _ = on("emulator", ex, x)
    with pytest.raises(BoardError, match="no board double at 127.0.0.1:1"):
        tvm_spinn.use_board(vm, "double://127.0.0.1:1")
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), y)  # still on the emulator


@pytest.mark.parametrize("name", list(MODELS))
def test_zoo_on_double_bit_exact_with_emulator(name, built, double, monkeypatch):
    ex, x = built[name]
    _, y_emu, emu = on("emulator", ex, x, monkeypatch)
    emu_stats = [e.last_stats for e in emu]
    vm, y_board, board = on(double, ex, x, monkeypatch)
    np.testing.assert_array_equal(y_board, y_emu)
    assert all(type(e.board).__name__ == "BoardView" for e in board)
    # The provenance the cores stored (read back from their provenance regions) counts exactly
    # what the emulator counted for the same batch.
    for st, e_board in zip(emu_stats, board):
        prov, counted = e_board.last_stats.provenance, st.provenance
        for key in ("packets_in", "packets_out", "computes", "macs", "saturated", "dropped"):
            assert prov[key] == counted[key], (key, prov[key], counted[key])
        assert prov["markers_in"] == prov["released"] == prov["lost_out"] == prov["rx_overflow"] == 0
        assert prov["datagrams_sent"] > 0 and prov["events_received"] > 0
        assert e_board.last_stats.lost_samples == 0
    tvm_spinn.use_board(vm, "emulator")


def test_two_sessions_in_one_process(built, double):
    (ex1, x1), (ex2, x2) = built["lenet5"], built["mlp64"]
    _, y1_emu, _ = on("emulator", ex1, x1)
    vm2, y2_emu, _ = on("emulator", ex2, x2)
    vm1, y1, _ = on(double, ex1, x1)
    np.testing.assert_array_equal(y1, y1_emu)
    # Each build maps a whole board: a second model is refused while the first holds it,
    # with what to do, and the second keeps its board.
    with pytest.raises(BoardError, match="already runs another model"):
        tvm_spinn.use_board(vm2, double)
    np.testing.assert_array_equal(vm2["main"](tvm.runtime.tensor(x2)).numpy(), y2_emu)
    tvm_spinn.use_board(vm1, "emulator")  # the first session ends (application stopped)
    tvm_spinn.use_board(vm2, double)  # a second session in the same process
    np.testing.assert_array_equal(vm2["main"](tvm.runtime.tensor(x2)).numpy(), y2_emu)
    tvm_spinn.use_board(vm2, "emulator")
    tvm_spinn.use_board(vm1, double)  # and the first model again, loaded afresh
    np.testing.assert_array_equal(vm1["main"](tvm.runtime.tensor(x1)).numpy(), y1_emu)
    tvm_spinn.use_board(vm1, "emulator")


def test_exported_module_runs_on_double_in_fresh_process(built, double, monkeypatch, tmp_path):
    ex, x = built["lenet5"]
    _, y_emu, _ = on("emulator", ex, x, monkeypatch)
    lib = tmp_path / "lenet5.so"
    ex.export_library(str(lib))
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np, tvm, tvm_spinn
        from tvm import relax
        ex = tvm.runtime.load_module({str(lib)!r})
        vm = relax.VirtualMachine(ex, tvm.cpu())
        y = vm["main"](tvm.runtime.tensor(np.load({str(tmp_path / 'x.npy')!r}))).numpy()
        assert type(tvm_spinn.executors(vm)[0].board).__name__ == "BoardView"
        np.save({str(tmp_path / 'y.npy')!r}, y)
    """)
    env = dict(os.environ, TVM_SPINN_BOARD=double)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), y_emu)


def test_faults_on_double(built, double, monkeypatch):
    ex, x = built["lenet5"]
    _, y_emu, _ = on("emulator", ex, x, monkeypatch)
    vm, y, (e,) = on(double, ex, x, monkeypatch)
    np.testing.assert_array_equal(y, y_emu)
    txrx = e.board.txrx
    n_msgs = e.last_stats.provenance["datagrams_sent"] // len(x)  # datagrams per sample
    # 1. input datagrams lost on the way: the first layer's cores release the samples after
    #    their lost timeout; the markers reach the host, which names exactly those samples.
    txrx.inject_faults(drop_datagrams=[3 * n_msgs + 1, 10 * n_msgs])
    with pytest.raises(LostSamplesError) as info:
        vm["main"](tvm.runtime.tensor(x))
    assert info.value.lost == [3, 10], info.value.lost
    prov = e.last_stats.provenance
    assert prov["released"] >= 2 and prov["lost_out"] >= 2 and e.last_stats.lost_samples == 2
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), y_emu)  # usable afterwards
    # 2. a multicast packet dropped in the fabric: the sample it belongs to is lost, unless
    #    the copy dropped was one no core beyond it needed (fan-out); either way nothing wrong
    #    comes back
    n_lost = 0
    for nth in (5000, 2000, 9000, 700, 3500):
        txrx.inject_faults(drop_packets=[nth])
        try:
            np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), y_emu)
        except LostSamplesError as lost:
            assert len(lost.lost) == 1
            n_lost += 1
        assert e.last_stats.provenance["router_dropped"] == 1
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), y_emu)
    assert n_lost >= 1
    # 3. a core that stops: nothing comes back past it; the host's sample timeout names the
    #    samples in flight and every later one; nothing wrong is returned.
    core = e.program.cores[len(e.program.cores) // 2].placement
    txrx.inject_faults(stop_core=list(core))
    with pytest.raises(LostSamplesError) as info:
        vm["main"](tvm.runtime.tensor(x[:6]))
    assert info.value.lost == list(range(6))
    # The process is still usable: the board is loaded afresh.
    _, y2, _ = on(double, ex, x)
    np.testing.assert_array_equal(y2, y_emu)
    tvm_spinn.use_board(vm, "emulator")


@pytest.mark.parametrize("name", ["mlp64", "lenet5", "resnet8"])
def test_emulator_drops_are_never_silent(name, built, monkeypatch):
    """Drop one multicast packet at many places of a run: each run either returns exactly the
    clean result or raises LostSamplesError, whose other rows are exact (the integer
    reference, bit for bit); the next run is clean again."""
    ex, x = built[name]
    x = x[:8]
    vm, y_clean, (e,) = on("emulator", ex, x, monkeypatch)
    ref = tvm_spinn.integer_reference(e.program, x)
    routed = e.board.fault_counts()["routed"]
    rng = np.random.default_rng(5)
    n_lost = 0
    for nth in rng.integers(0, routed, size=12):
        e.board.drop_packet(int(nth))
        try:
            np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), y_clean)
        except LostSamplesError as exc:
            n_lost += 1
            assert 1 <= len(exc.lost) <= e.program.n_slots and exc.lost == e.last_lost.lost
            good = np.setdiff1d(np.arange(len(x)), exc.lost)
            np.testing.assert_array_equal(e.last_lost.partial[good], ref[good])
            assert not e.last_lost.partial[exc.lost].any()  # nothing of a lost sample is returned
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), y_clean)
    assert n_lost >= 6  # most packets matter
    e.board.stop_core(e.program.cores[0].label)
    with pytest.raises(LostSamplesError) as info:
        vm["main"](tvm.runtime.tensor(x))
    assert info.value.lost == list(range(len(x)))


def test_board_held_by_another_model_or_process(built, double, tmp_path):
    """A board one model holds is refused to another, with what to do: another model of the
    same architecture (other weights) in this process, or another process; the holder keeps
    running exactly, and nobody else's application is stopped."""
    ex, x = built["mlp64"]
    vm, y_emu, _ = on("emulator", ex, x)
    torch.manual_seed(1)
    other = zoo.mlp64().eval()  # the same architecture, other weights
    ex2 = tvm_spinn.build(tvm_spinn.from_torch(other, (torch.from_numpy(x[:2]),)), calibration=x)
    vm2, _, _ = on("emulator", ex2, x)
    tvm_spinn.use_board(vm, double)
    with pytest.raises(BoardError, match="already runs another model"):
        tvm_spinn.use_board(vm2, double)
    lib = tmp_path / "mlp64.so"
    ex.export_library(str(lib))
    script = textwrap.dedent(f"""
        import numpy as np, tvm, tvm_spinn
        from tvm import relax
        vm = relax.VirtualMachine(tvm.runtime.load_module({str(lib)!r}), tvm.cpu())
        try:
            tvm_spinn.use_board(vm, {double!r})
        except tvm_spinn.BoardError as exc:
            print("REFUSED", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "REFUSED" in proc.stdout and "in use on the board" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), y_emu)  # still ours, exact
    tvm_spinn.use_board(vm, "emulator")


def test_reload_after_a_fault_with_several_functions(built, double):
    """use_board onto the board a model is on reloads it, every function of it together."""
    ex, x = built["board_filling_mlp"]
    vm, y_emu, _ = on("emulator", ex, x)
    _, y, found = on(double, ex, x)
    assert len(found) == 2  # two offloaded functions sharing the board
    np.testing.assert_array_equal(y, y_emu)
    found[0].board.txrx.inject_faults(stop_core=list(found[0].program.cores[0].placement))
    with pytest.raises(LostSamplesError):
        vm["main"](tvm.runtime.tensor(x))
    tvm_spinn.use_board(vm, double)  # reload
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), y_emu)
    found[0].board.txrx.inject_faults(drop_packets=[10, 3000])  # several drops pending at once
    with pytest.raises(LostSamplesError) as info:
        vm["main"](tvm.runtime.tensor(x))
    assert len(info.value.lost) >= 2
    tvm_spinn.use_board(vm, "emulator")


def test_board_gone_and_bad_settings(built, monkeypatch):
    """A double that dies between calls, a port that answers something else, and bad
    settings: clear BoardErrors, quickly."""
    import socket
    import threading
    import time

    ex, x = built["lenet5"]
    vm, y_emu, _ = on("emulator", ex, x)
    proc = subprocess.Popen([sys.executable, "-m", "tvm_spinn.board_double"], stdout=subprocess.PIPE, text=True)
    board = proc.stdout.readline().strip().split("=", 1)[1]
    try:
        tvm_spinn.use_board(vm, board)
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), y_emu)
        monkeypatch.setenv("TVM_SPINN_SAMPLE_TIMEOUT", "abc")
        with pytest.raises(BoardError, match="TVM_SPINN_SAMPLE_TIMEOUT='abc'"):
            vm["main"](tvm.runtime.tensor(x))
        monkeypatch.delenv("TVM_SPINN_SAMPLE_TIMEOUT")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    start = time.monotonic()
    with pytest.raises(BoardError, match="closed the connection|stopped"):
        vm["main"](tvm.runtime.tensor(x))
    assert time.monotonic() - start < 15
    tvm_spinn.use_board(vm, "emulator")
    # something else listening on the port
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer():
        conn, _ = server.accept()
        conn.recv(1000)
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    with pytest.raises(BoardError, match="not a tvm_spinn board double"):
        tvm_spinn.use_board(vm, f"double://127.0.0.1:{port}")
    server.close()
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), y_emu)


def test_toolchain_config_without_a_user_cfg(tmp_path, monkeypatch):
    """A plain hostname reads the toolchain's config; with none in the user's home it uses
    the defaults (SpiNN-5) and writes nothing there."""
    monkeypatch.setenv("HOME", str(tmp_path))
    script = ("from tvm_spinn.runtime.board.session import toolchain_config\n"
              "toolchain_config()\n"
              "from spinnman.data import SpiNNManDataView\n"
              "print(type(SpiNNManDataView.get_machine_version()).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, HOME=str(tmp_path), TVM_SPINN_LIGHT_IMPORT="1"))
    assert proc.stdout.strip().endswith("Version5"), proc.stdout + proc.stderr[-2000:]
    assert os.listdir(tmp_path) == []


def test_energy_model_uses_the_toolchains_figures():
    """The statistics' energy constants are the installed toolchain's own (spinn_machine)."""
    from spinn_machine.version.version_5 import Version5
    from spinn_machine.version.version_spin1 import VersionSpin1

    from tvm_spinn.runtime import stats

    assert stats.WATTS_BOARD_IDLE == Version5.WATTS_FOR_48_CHIP_BOARD_IDLE_COST
    assert stats.WATTS_PER_ACTIVE_CORE == VersionSpin1.WATTS_PER_CORE_ACTIVE_OVERHEAD
    assert stats.JOULES_PER_ROUTED_PACKET == VersionSpin1.JOULES_PER_PACKET
    e = stats.energy_per_inference(1e-3, 2e8, 1e6)
    assert e == pytest.approx({"board idle": 26.84e-3, "cores": 0.034, "packets": 1e-3})


def test_spalloc_allocates_a_board_and_frees_it(built, double, tmp_path, monkeypatch):
    """spalloc://server: the toolchain's spalloc client (honouring the user's spalloc config) asks a spalloc
    server for one board, the runtime loads it (here the board double stands in for the board
    the fake server hands out, through the transceiver factory) and runs the model exactly;
    leaving the board destroys the job."""
    import json
    import socket
    import threading

    import spinnman.transceiver

    from tvm_spinn.runtime.board.double_link import DoubleTransceiver

    calls = []
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve(conn):
        f = conn.makefile("rwb")
        for line in f:
            req = json.loads(line)
            calls.append((req["command"], req["args"], req["kwargs"]))
            ret = {"version": "5.0.0", "create_job": 7, "get_job_state":
                   {"state": 3, "power": True, "keepalive": 60.0, "reason": None},
                   "get_job_machine_info": {"width": 8, "height": 8, "connections": [[[0, 0], "127.0.0.1"]],
                                            "machine_name": "fake", "boards": [[0, 0, 0]]}}.get(req["command"])
            f.write(json.dumps({"return": ret}).encode() + b"\n")
            f.flush()

    def accept():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    from spalloc_client import job as spalloc_job

    (tmp_path / "spalloc").write_text("[spalloc]\nowner = tests@tvm_spinn\n")
    monkeypatch.setattr(spalloc_job, "SEARCH_PATH", [str(tmp_path / "spalloc")])  # the user's spalloc config
    monkeypatch.setenv("HOME", str(tmp_path))
    double_port = int(double.rsplit(":", 1)[1])
    monkeypatch.setattr(spinnman.transceiver, "create_transceiver_from_hostname",
                        lambda host, **kw: DoubleTransceiver(host, double_port))
    ex, x = built["mlp64"]
    vm, y_emu, _ = on("emulator", ex, x)
    tvm_spinn.use_board(vm, f"spalloc://127.0.0.1:{port}")
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), y_emu)
    created = [c for c in calls if c[0] == "create_job"]
    assert created and created[0][1] == [1] and created[0][2]["owner"] == "tests@tvm_spinn"
    tvm_spinn.use_board(vm, "emulator")
    assert any(c[0] == "destroy_job" and c[1][0] == 7 for c in calls)
    server.close()


def test_interrupt_on_the_board_leaves_it_ready(built, double, monkeypatch):
    """Ctrl-C in the middle of a call arrives as KeyboardInterrupt (not an empty RuntimeError
    from TVM's callback boundary), and the next call is exact: what the interrupted call left
    in flight drains away first."""
    from tvm_spinn.runtime.board.live_io import LiveIO

    ex, x = built["lenet5"]
    vm, y_emu, _ = on("emulator", ex, x)
    tvm_spinn.use_board(vm, double)
    send = LiveIO._send
    sent = []

    def interrupted(self, k, body):
        sent.append(k)
        if len(sent) == 40:  # mid-batch, samples in flight
            raise KeyboardInterrupt
        send(self, k, body)

    monkeypatch.setattr(LiveIO, "_send", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vm["main"](tvm.runtime.tensor(x))
    monkeypatch.setattr(LiveIO, "_send", send)
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), y_emu)
    tvm_spinn.use_board(vm, "emulator")
