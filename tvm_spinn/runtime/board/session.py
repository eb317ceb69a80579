"""Board sessions: programs on a real SpiNNaker machine (or a board double), with the
interface the executor uses for the emulator (``run``, ``core_counters``, ...).

A :class:`BoardSession` is one application on one machine: connect (hostname, spalloc,
double), load (:mod:`.loader`), start the run. The offloaded functions mapped together
share it, each through a :class:`BoardView`. Each ``run`` streams a batch (:mod:`.live_io`),
then pauses the cores (they store provenance and signal READY), reads the provenance back
and resumes: the statistics of every call carry the board's own counters. The last view to
close (or interpreter exit) stops the application, clears the IP tag, closes the sockets
and frees a spalloc job. No toolchain state is global: several sessions can live in one
process, one after the other or side by side.
"""
from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
from typing import Dict, Tuple

import numpy as np

from ...errors import BoardError, LostSamplesError
from ...program import BoardProgram
from .. import replicas
from .address import BoardAddress
from .live_io import LiveIO
from .loader import BoardLoader

log = logging.getLogger(__name__)

COUNTER_KEYS = ("packets_in", "packets_out", "computes", "outputs", "blocks", "dropped", "saturated", "rx_general",
                "rx_lookups", "rx_scanned",
                "markers_in", "released", "lost_out", "rx_overflow", "send_failed", "compute_failed",
                "trigger_failed")
SPALLOC_TIMEOUT_S = 300.0


def _local_ip_towards(host: str) -> str:
    """The local address the board can reach us at (the interface that routes to it)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((host, 17893))
        return probe.getsockname()[0]
    finally:
        probe.close()


def toolchain_config() -> None:
    """Load the toolchain's configuration as the graph front end does: its defaults, then the
    user's ``~/.spiNNakerGraphFrontEnd.cfg`` if there is one (none: the defaults, and no
    template is written into the user's home); a SpiNN-5 board unless it names a version."""
    from spinn_utilities.config_holder import get_config_int_or_none, load_config, set_cfg_files, set_config
    from spinnaker_graph_front_end import config_setup

    config_setup.setup_configs()
    user_cfg = os.path.join(os.path.expanduser("~"), "." + config_setup.CONFIG_FILE_NAME)
    if not os.path.isfile(user_cfg):
        set_cfg_files(None, os.path.join(os.path.dirname(config_setup.__file__), config_setup.CONFIG_FILE_NAME))
    load_config()
    if get_config_int_or_none("Machine", "version") is None:
        set_config("Machine", "version", "5")  # a SpiNN-5 board, what tvm_spinn maps for


def spalloc_request(board) -> Tuple[tuple, dict]:
    """The arguments of spalloc_client.Job for the machine a build mapped (a
    tiling.resources.Board): one board, ``Job(1)``; a triad, ``Job(1, 1, require_torus=True)``
    (a 1 x 1 triad that is a whole torus, the 12 x 12 chips with wrap-arounds the build was
    mapped on: a triad cut out of a bigger machine has no wrap-arounds and other chip numbers)."""
    if board.boards == 1:
        return (1,), {}
    return (board.width // 12, board.height // 12), {"require_torus": True}


def connect(address: BoardAddress, board=None):
    """(transceiver, board ip, cleanup callable) for a board address. Real boards use the
    toolchain's own transceiver and spalloc client, configured from the user's SpiNNaker
    config files (~/.spiNNakerGraphFrontEnd.cfg; spalloc's ~/.config/spalloc or ./.spalloc).
    board: the tiling.resources.Board the program was mapped for (default one SpiNN-5): spalloc
    allocates that many boards, and a machine of several boards gets a connection to each
    board's Ethernet (the IP tags and the live input of every board)."""
    from ...tiling import resources as res

    board = board or res.SPINN_5
    if address.kind == "double":
        from .double_link import DoubleTransceiver

        txrx = DoubleTransceiver(address.host, address.port)
        return txrx, txrx.board_ip, lambda: None
    cleanup = []
    host = address.host
    try:
        if address.kind == "spalloc":
            from spalloc_client import Job

            args, kwargs = spalloc_request(board)
            job = Job(*args, hostname=address.host, port=address.port, **kwargs)
            cleanup.append(lambda: job.destroy("tvm_spinn session closed"))
            job.wait_until_ready(timeout=SPALLOC_TIMEOUT_S)
            if (job.width, job.height) != (board.width, board.height):
                raise BoardError(f"spalloc at {address} allocated a {job.width} x {job.height} chip machine; the "
                                 f"build was mapped on a {board.name} ({board.width} x {board.height} chips). Rebuild "
                                 "for the machine spalloc gives, or ask the server's administrator for a "
                                 f"{board.boards}-board torus")
            host = job.hostname
        from spinnman.transceiver import create_transceiver_from_hostname

        toolchain_config()
        txrx = create_transceiver_from_hostname(host, ensure_board_is_ready=True)
        if board.boards > 1:
            txrx.discover_scamp_connections()  # one SCAMP connection per board's Ethernet
    except BoardError:
        raise
    except Exception as exc:  # the toolchain's connection errors, without their traceback
        for fn in cleanup:
            fn()
        raise BoardError(f"cannot reach {address}: {type(exc).__name__}: {str(exc)[:400]}") from None
    return txrx, host, lambda: [fn() for fn in cleanup]


class BoardSession:
    """A board's application loaded and running on the machine at ``address``: every core
    of ``program``'s mapping (the offloaded functions mapped together share one application,
    one gatherer and one IP tag). Shared by those functions' :class:`BoardView` s.

    Raises BoardError when the machine cannot be reached or loaded (with the reason and
    what to do)."""

    def __init__(self, program: BoardProgram, address: BoardAddress, key: tuple) -> None:
        self.program, self.address, self.key = program, address, key
        self.lock = threading.RLock()
        self.users = 0
        self._closed = True
        from ...tiling import resources as res

        self.txrx, board_ip, self._cleanup = connect(address, res.board_named(program.board))
        self.is_double = bool(getattr(self.txrx, "is_double", False))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            host_ip = "127.0.0.1" if self.is_double else _local_ip_towards(board_ip)
            self.sock.bind((host_ip if self.is_double else "0.0.0.0", 0))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            self.loader = BoardLoader(self.txrx, program, board_ip, (host_ip, self.sock.getsockname()[1]),
                                      is_double=self.is_double)
            self.loader.load()
            self.loader.start()
        except BaseException:  # stop only an application we started loading (never another's)
            self._teardown(stop_app=getattr(getattr(self, "loader", None), "loaded", False))
            raise
        self._closed = False
        self.placements = {im.label: tuple(im.placement) for im in program.images}
        self.counters = {label: dict.fromkeys(COUNTER_KEYS + ("macs",), 0) for label in self.loader.kernel_labels}
        self.router_dropped = 0

    def refresh(self) -> None:
        """Pause, read provenance, resume: the counters as the cores themselves keep them."""
        self.loader.pause()
        prov = self.loader.read_provenance()
        self.router_dropped = self.loader.router_drops()
        self.loader.start()
        for label, words in prov.items():
            self.counters[label] = {k: words.get(k, 0) for k in COUNTER_KEYS}
            self.counters[label]["macs"] = words.get("macs_lo", 0) + (words.get("macs_hi", 0) << 32)

    def _teardown(self, stop_app: bool) -> None:
        if stop_app:
            try:
                self.loader.stop() if hasattr(self, "loader") else None
            except Exception as exc:  # the board may already be gone
                log.warning("stopping the application on %s: %s", self.address, exc)
            for tag in self.program.iptags:
                try:
                    self.txrx.clear_ip_tag(tag.tag)
                except Exception:
                    pass
        for fn in (self.sock.close, self.txrx.close, self._cleanup):
            try:
                fn()
            except Exception as exc:
                log.debug("closing %s: %s", self.address, exc)

    def close(self) -> None:
        """Stop the cores and release the board (idempotent)."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            _sessions.pop(self.key, None)
            self._teardown(stop_app=True)



_sessions: Dict[tuple, BoardSession] = {}
_sessions_lock = threading.Lock()


def _session_key(program: BoardProgram, address: BoardAddress) -> tuple:
    """The functions mapped together (one build) share a session; any other program is
    another model, even with the same architecture (its weights differ)."""
    import hashlib

    from .loader import core_regions

    kernels = {c.label: c for c in program.cores}
    digest = hashlib.sha256()
    for im in sorted(program.images, key=lambda im: im.label):
        digest.update(im.label.encode())
        regions = core_regions(im, kernels)
        for num in sorted(regions):
            digest.update(regions[num])
    return (str(address), int(program.app_id), digest.hexdigest())


class BoardView:
    """One offloaded function on a shared :class:`BoardSession`: the executor's board
    (``run``, ``core_counters``, ``router_counters``, ``board_counters``, ``close``).

    Raises LostSamplesError from :meth:`run` naming the samples that did not come back
    whole (the session stays usable)."""

    def __init__(self, program: BoardProgram, address: BoardAddress) -> None:
        from ..emulator import EmulatedBoard

        key = _session_key(program, address)
        with _sessions_lock:
            session = _sessions.get(key)
            busy = [s for k, s in _sessions.items() if k[0] == key[0] and k != key and not s._closed]
            if busy and (session is None or session._closed):
                # each build maps a whole board: two different models cannot share one
                other = busy[0].program.name[:120]
                raise BoardError(f"{address} already runs another model in this process ({other}); "
                                 f"move that one off first (tvm_spinn.use_board(vm, 'emulator')) or use "
                                 f"another board")
            if session is None or session._closed:
                session = BoardSession(program, address, key)
                _sessions[key] = session
            session.users += 1
        self.session, self.program, self.address = session, program, address
        self.n_slots = program.n_slots
        self.labels = [c.label for c in program.cores]
        inputs = [session.placements[i.label] for i in program.inputs]
        self.io = LiveIO(session.txrx, session.sock, EmulatedBoard.codec(program), program, inputs,
                         paced=not session.is_double, health=session.loader.health)
        self._base = {label: dict(session.counters[label]) for label in self.labels}
        self._drops_base = session.router_dropped
        self._closed = False

    @property
    def txrx(self):
        return self.session.txrx

    @property
    def loader(self):
        return self.session.loader

    def run(self, x_q: np.ndarray) -> np.ndarray:
        """Stream int16 samples (n, in_features); int16 (n, out_features)."""
        x_q = np.ascontiguousarray(np.asarray(x_q, np.int16).reshape(len(x_q), -1))
        if self._closed or self.session._closed:
            raise BoardError(f"the session on {self.address} is closed")
        n, copies = len(x_q), max(1, self.program.replicas)
        with self.session.lock:
            try:  # one sample per copy of the function at a time
                y, lost = self.io.run(replicas.group(x_q, copies), self.n_slots, replicas.live_copies(n, copies))
            finally:
                self.session.refresh()
        y = replicas.ungroup(y, copies, n)
        if lost:
            raise LostSamplesError(replicas.lost_samples(lost, copies, n), n, y, f"on {self.address}")
        return y

    def reset_counters(self) -> None:
        self._base = {label: dict(self.session.counters[label]) for label in self.labels}
        self._drops_base = self.session.router_dropped
        self.io.counts.clear()

    def core_counters(self) -> Dict[str, Dict[str, int]]:
        return {label: {k: v - self._base[label].get(k, 0) for k, v in self.session.counters[label].items()}
                for label in self.labels}

    def router_counters(self) -> Tuple[np.ndarray, np.ndarray]:
        """Not counted per chip and link on a board: zeros (the statistics say so)."""
        n = len(self.program.chips)
        return np.zeros(n, np.uint64), np.zeros((n, 6), np.uint64)

    def board_counters(self) -> Dict[str, int]:
        out = {k: int(v) for k, v in self.io.counts.items()}
        out["router_dropped"] = int(self.session.router_dropped - self._drops_base)
        return out

    def close(self) -> None:
        """Leave the board; the last function to leave stops the application."""
        if self._closed:
            return
        self._closed = True
        with _sessions_lock:
            self.session.users -= 1
            last = self.session.users <= 0
        if last:
            self.session.close()


@atexit.register
def _close_all() -> None:
    for session in list(_sessions.values()):
        session.close()
