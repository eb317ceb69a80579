"""A board session: one program on a real SpiNNaker machine (or a board double), with the
interface the executor uses for the emulator (``run``, ``core_counters``, ...).

Opening: connect (hostname, spalloc, double), load (:mod:`.loader`), start the run. Each
``run`` streams a batch (:mod:`.live_io`), then pauses the cores (they store provenance and
signal READY), reads the provenance back and resumes: the statistics of every call carry
the board's own counters. ``close`` (also at interpreter exit) stops the application,
clears the IP tag, closes the sockets and frees a spalloc job. Nothing is global: several
sessions can live in one process, one after the other or side by side.
"""
from __future__ import annotations

import atexit
import logging
import socket
import threading
import weakref
from typing import Dict, Tuple

import numpy as np

from ...errors import BoardError, LostSamplesError
from ...program import BoardProgram
from .address import BoardAddress
from .live_io import LiveIO
from .loader import BoardLoader

log = logging.getLogger(__name__)

COUNTER_KEYS = ("packets_in", "packets_out", "computes", "outputs", "blocks", "dropped", "saturated",
                "markers_in", "released", "lost_out", "rx_overflow", "send_failed", "compute_failed",
                "trigger_failed")
SPALLOC_TIMEOUT_S = 300.0
_open_sessions: "weakref.WeakSet[BoardSession]" = weakref.WeakSet()


def _local_ip_towards(host: str) -> str:
    """The local address the board can reach us at (the interface that routes to it)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((host, 17893))
        return probe.getsockname()[0]
    finally:
        probe.close()


def connect(address: BoardAddress):
    """(transceiver, board ip, cleanup callable) for a board address. Real boards use the
    toolchain's own transceiver and spalloc client, configured from the user's SpiNNaker
    config files (~/.spiNNakerGraphFrontEnd.cfg, ~/.spalloc)."""
    if address.kind == "double":
        from .double_link import DoubleTransceiver

        txrx = DoubleTransceiver(address.host, address.port)
        return txrx, txrx.board_ip, lambda: None
    cleanup = []
    host = address.host
    try:
        if address.kind == "spalloc":
            from spalloc_client import Job

            job = Job(1, hostname=address.host, port=address.port)
            cleanup.append(lambda: job.destroy("tvm_spinn session closed"))
            job.wait_until_ready(timeout=SPALLOC_TIMEOUT_S)
            host = job.hostname
        from spinn_utilities.config_holder import get_config_int_or_none, set_config
        from spinnaker_graph_front_end.config_setup import setup_configs
        from spinnman.transceiver import create_transceiver_from_hostname

        setup_configs()  # the toolchain's defaults, then the user's own cfg
        if get_config_int_or_none("Machine", "version") is None:
            set_config("Machine", "version", "5")  # a SpiNN-5 board, what tvm_spinn maps for
        txrx = create_transceiver_from_hostname(host, ensure_board_is_ready=True)
    except BoardError:
        raise
    except Exception as exc:  # the toolchain's connection errors, without their traceback
        for fn in cleanup:
            fn()
        raise BoardError(f"cannot reach {address}: {type(exc).__name__}: {str(exc)[:400]}") from None
    return txrx, host, lambda: [fn() for fn in cleanup]


class BoardSession:
    """``program`` loaded and running on the machine at ``address``.

    Raises BoardError when the machine cannot be reached or loaded (with the reason and
    what to do), LostSamplesError from :meth:`run` when samples did not come back whole."""

    def __init__(self, program: BoardProgram, address: BoardAddress) -> None:
        from ..emulator import EmulatedBoard

        self.program, self.address = program, address
        self.n_slots = program.n_slots
        self._lock = threading.Lock()
        self._closed = True
        self.txrx, board_ip, self._cleanup = connect(address)
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
        except BaseException:
            self._teardown(stop_app=True)
            raise
        self._closed = False
        by_label = {im.label: tuple(im.placement) for im in program.images}
        inputs = [by_label[i.label] for i in program.inputs]
        self.io = LiveIO(self.txrx, self.sock, EmulatedBoard.codec(program), program, inputs, paced=not self.is_double)
        self._base = {label: dict.fromkeys(COUNTER_KEYS, 0) for label in self.loader.kernel_labels}
        self._now = {label: dict(v) for label, v in self._base.items()}
        self._drops_base = self._drops_now = 0
        self._lost_total = 0
        _open_sessions.add(self)

    # -- the executor's board interface ------------------------------------------------------
    def run(self, x_q: np.ndarray) -> np.ndarray:
        """Stream int16 samples (n, in_features); int16 (n, out_features). Raises
        LostSamplesError naming the lost samples (the session stays usable)."""
        x_q = np.ascontiguousarray(np.asarray(x_q, np.int16).reshape(len(x_q), -1))
        if self._closed:
            raise BoardError(f"the session on {self.address} is closed")
        with self._lock:
            try:
                y, lost = self.io.run(x_q, self.n_slots)
            finally:
                self._refresh()
        self._lost_total += len(lost)
        if lost:
            raise LostSamplesError(lost, len(x_q), y, f"on {self.address}")
        return y

    def _refresh(self) -> None:
        """Pause, read provenance, resume: the counters as the cores themselves keep them."""
        self.loader.pause()
        prov = self.loader.read_provenance()
        self._drops_now = self.loader.router_drops()
        self.loader.start()
        for label, words in prov.items():
            self._now[label] = {k: words.get(k, 0) for k in COUNTER_KEYS}
            self._now[label]["macs"] = words.get("macs_lo", 0) + (words.get("macs_hi", 0) << 32)

    def reset_counters(self) -> None:
        self._base = {label: dict(v) for label, v in self._now.items()}
        self._drops_base = self._drops_now
        self.io.counts.clear()

    def core_counters(self) -> Dict[str, Dict[str, int]]:
        return {label: {k: v - self._base[label].get(k, 0) for k, v in now.items()}
                for label, now in self._now.items()}

    def router_counters(self) -> Tuple[np.ndarray, np.ndarray]:
        """Not counted per chip and link on a board: zeros (the statistics say so)."""
        n = len(self.program.chips)
        return np.zeros(n, np.uint64), np.zeros((n, 6), np.uint64)

    def board_counters(self) -> Dict[str, int]:
        out = {k: int(v) for k, v in self.io.counts.items()}
        out["router_dropped"] = int(self._drops_now - self._drops_base)
        return out

    # -- lifetime ----------------------------------------------------------------------------
    def _teardown(self, stop_app: bool) -> None:
        if stop_app:
            try:
                self.txrx.stop_application(self.program.app_id or 30)
            except Exception as exc:  # the board may already be gone
                log.warning("stopping the application on %s: %s", self.address, exc)
            for tag in self.program.iptags:
                try:
                    self.txrx.clear_ip_tag(tag.tag)
                except Exception:
                    pass
        for fn in (self.sock.close if hasattr(self, "sock") else None, self.txrx.close, self._cleanup):
            try:
                if fn is not None:
                    fn()
            except Exception as exc:
                log.debug("closing %s: %s", self.address, exc)

    def close(self) -> None:
        """Stop the cores and release the board (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._teardown(stop_app=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


@atexit.register
def _close_all() -> None:
    for session in list(_open_sessions):
        session.close()
