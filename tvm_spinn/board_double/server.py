"""The board double: a SpiNN-5 board on localhost, for the board runtime's tests.

What is the double and what is real (the runtime's side is the same code for a board):

========================  ===================================================================
real (tvm_spinn + toolchain)  the board runtime: loader, run control, live IO, flow control;
                          the toolchain's classes for every argument (CoreSubsets, routing
                          entries, IP tags, SDP messages, EIEIO messages, CPU states,
                          signals); the SDP and EIEIO datagrams on the wire (UDP); the data-spec
                          region tables, config regions and provenance regions as bytes in
                          (double) SDRAM; the kernels' C code, their lost-sample logic
                          (spinn_slots.h, shared with spin1_binding.h) and the packet router
                          with the loaded routing tables (the emulator library)
the double                SCAMP: the transceiver's control calls arrive as JSON lines over TCP
                          (not SCP); SDRAM is a bump allocator; the binaries are not run as ARM
                          code: the double runs the host build of the same kernel C, chosen by
                          the .aplx name, with the config it reads back from SDRAM; spin1 and
                          simulation.c are modelled as a core-state machine (READY after load,
                          PAUSED after START (c_main),
                          SYNC0/SYNC1 after CMD_RUNTIME, RUNNING after the signal, READY after
                          CMD_PAUSE with provenance written); the reverse-IP-tag source and the
                          live packet gatherer are modelled (the gatherer, as front-end-common
                          7.4.1's, sends a packet without payload as payload 0, and flushes
                          after each input datagram instead of on its 1 ms timer); the lost
                          timeout fires after LOST_TIMEOUT_TICKS ms with no input datagram;
                          time is not modelled (no link bandwidth, no router waits)
========================  ===================================================================

Faults for tests (``DoubleTransceiver.inject_faults``): input datagrams lost, a multicast
packet dropped in the fabric, a core that stops.
"""
from __future__ import annotations

import logging
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..machine.graph import (CONFIG_HEADER_WORDS, HEADER_LOST_BIT, KERNEL_BINARIES,
                             LOST_TIMEOUT_TICKS, PROVENANCE_NAMES, SYSTEM_PROVENANCE_NAMES)
from ..runtime.board.double_link import decode, encode
from ..runtime.board.loader import APPDATA_MAGIC_NUM, CMD_PAUSE, CMD_RUNTIME, CMD_STOP, DSE_VERSION, MAX_MEM_REGIONS

log = logging.getLogger(__name__)

# spinnman 7.4.1 CPUState values
DEAD, RUN_TIME_EXCEPTION, READY, RUNNING, SYNC0, SYNC1, PAUSED, FINISHED, IDLE = 0, 2, 5, 7, 8, 9, 10, 11, 15
KERNEL_KINDS = {binary: kind for kind, binary in KERNEL_BINARIES.items()}
LPG_BINARY, RIPTMCS_BINARY = "live_packet_gather.aplx", "reverse_iptag_multicast_source.aplx"
SDRAM_BASE, SDRAM_BYTES = 0x60000000, 119 * 1024 * 1024  # usable SDRAM per SpiNN-5 chip (128 MB less SCAMP's)
LPG_TAG_WORD = 9  # the live packet gatherer's config: its IP tag (live_packet_gather_machine_vertex.py)
EVENTS_PER_MESSAGE = 31


@dataclass
class Core:
    binary: str
    app_id: int
    state: int = PAUSED
    started: bool = False  # c_main has run (the START signal)
    runs: int = 0
    config: Optional[np.ndarray] = None
    lost_bit: int = 0
    provenance_address: int = 0
    tag: int = -1


@dataclass
class App:
    routes: Dict[Tuple[int, int], np.ndarray] = field(default_factory=dict)
    board: object = None  # EmulatedBoard.from_cores, built when the cores first run
    gatherer: Optional[Tuple[int, int, int]] = None


class BoardDouble:
    """A SpiNN-5 board double listening on ``host``: control on a TCP port, SDP on a UDP port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, sdp_port: int = 0) -> None:
        from spinn_machine.config_setup import unittest_setup
        from spinn_utilities.config_holder import set_config

        unittest_setup()  # this process's own toolchain config: a SpiNN-5 board
        set_config("Machine", "version", "5")
        from spinn_machine.virtual_machine import virtual_machine_by_boards

        machine = virtual_machine_by_boards(1)
        self.chips = {(c.x, c.y): list(c.placable_processors_ids) for c in machine.chips}
        self.links = {(c.x, c.y, link.source_link_id): (link.destination_x, link.destination_y)
                      for c in machine.chips for link in c.router.links}
        self.host = host
        self.listener = socket.create_server((host, port))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, sdp_port))
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.port, self.sdp_port = self.listener.getsockname()[1], self.udp.getsockname()[1]
        self.memory: Dict[Tuple[int, int], List[Tuple[int, bytearray, int]]] = {}
        self.next_free: Dict[Tuple[int, int], int] = {}
        self.user0: Dict[Tuple[int, int, int], int] = {}
        self.cores: Dict[Tuple[int, int, int], Core] = {}
        self.apps: Dict[int, App] = {}
        self.iptags: Dict[int, Tuple[str, int, bool]] = {}
        self.datagrams = 0
        self.drop_datagrams: set = set()
        self.pending_faults: List[dict] = []  # for applications not running yet
        self.counts = {"datagrams_in": 0, "datagrams_dropped": 0, "datagrams_out": 0}
        self.last_input = time.monotonic()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.udp, selectors.EVENT_READ, "sdp")
        self._running = True

    # -- memory ------------------------------------------------------------------------------
    def _block(self, x: int, y: int, address: int, length: int) -> Tuple[bytearray, int]:
        for base, data, _ in self.memory.get((x, y), ()):
            if base <= address and address + length <= base + len(data):
                return data, address - base
        raise ValueError(f"chip ({x}, {y}): {length} bytes at 0x{address:08x} lie outside every allocated block")

    def _read(self, x: int, y: int, address: int, length: int) -> bytes:
        data, off = self._block(x, y, address, length)
        return bytes(data[off:off + length])

    def _words(self, x: int, y: int, address: int, n: int) -> np.ndarray:
        return np.frombuffer(self._read(x, y, address, 4 * n), "<u4").copy()

    # -- control calls (the transceiver's) ---------------------------------------------------------
    def do_hello(self) -> dict:
        return {"sdp_port": self.sdp_port, "board_ip": self.host}

    def do_machine(self) -> dict:
        return {"chips": [[x, y, cores, self.host if (x, y) == (0, 0) else None]
                          for (x, y), cores in sorted(self.chips.items())]}

    def do_malloc_sdram(self, x, y, size, app_id, tag=0) -> int:
        if (x, y) not in self.chips:
            raise ValueError(f"no chip ({x}, {y})")
        base = self.next_free.get((x, y), SDRAM_BASE)
        if base + size > SDRAM_BASE + SDRAM_BYTES:
            raise ValueError(f"chip ({x}, {y}): no {size} bytes of SDRAM left")
        self.memory.setdefault((x, y), []).append((base, bytearray(size), app_id))
        self.next_free[(x, y)] = (base + size + 7) & ~7
        return base

    def do_write_memory(self, x, y, address, data) -> None:
        block, off = self._block(x, y, address, len(data))
        block[off:off + len(data)] = data

    def do_read_memory(self, x, y, address, length) -> bytes:
        return self._read(x, y, address, length)

    def do_write_user(self, x, y, p, user, value) -> None:
        if user == 0:
            self.user0[(x, y, p)] = value

    def do_load_multicast_routes(self, x, y, routes, app_id) -> None:
        self.apps.setdefault(app_id, App()).routes[(x, y)] = np.asarray(routes, np.uint32).reshape(-1, 3)

    def do_set_ip_tag(self, tag, host, port, strip_sdp) -> None:
        self.iptags[tag] = (host, port, strip_sdp)

    def do_clear_ip_tag(self, tag) -> None:
        self.iptags.pop(tag, None)

    def do_execute_flood(self, cores, binary, app_id) -> None:
        for x, y, p in cores:
            if p not in self.chips.get((x, y), ()):
                raise ValueError(f"core ({x}, {y}, {p}) is not an application core of this board")
            other = self.cores.get((x, y, p))
            if other is not None and other.app_id != app_id and other.state not in (FINISHED, DEAD):
                raise ValueError(f"core ({x}, {y}, {p}) is in use by application {other.app_id}")
            self.cores[(x, y, p)] = Core(binary, app_id, state=READY)  # loaded, waiting for START

    def _c_main(self, where, core: Core) -> None:
        """What the binding's c_main reads, as front-end-common 7.4.1 does: the region table
        (checksums verified, then the table's n_words and checksum zeroed), the config
        region's own header. A bad table or config is a run-time error, as on a board."""
        x, y, p = where
        try:
            table_at = self.user0[where]
            head = self._words(x, y, table_at, 2 + 3 * MAX_MEM_REGIONS)
            if head[0] != APPDATA_MAGIC_NUM or head[1] != DSE_VERSION:
                raise ValueError("bad region table magic or version")
            table = head[2:].reshape(MAX_MEM_REGIONS, 3)
            for pointer, checksum, n_words in table:
                if n_words:
                    words = self._words(x, y, int(pointer), int(n_words))
                    if int(words.astype(np.uint64).sum()) & 0xFFFFFFFF != int(checksum):
                        raise ValueError("region checksum mismatch")
            zeroed = table.copy()
            zeroed[:, 1:] = 0
            self.do_write_memory(x, y, table_at + 8, zeroed.astype("<u4").tobytes())
            if core.binary in KERNEL_KINDS:
                at = int(table[1, 0])
                hdr = self._words(x, y, at, CONFIG_HEADER_WORDS)
                cfg = self._words(x, y, at + 4 * CONFIG_HEADER_WORDS, int(hdr[0]))
                if int(cfg.astype(np.uint64).sum()) & 0xFFFFFFFF != int(hdr[1]):
                    raise ValueError("config checksum mismatch")
                core.config, core.lost_bit = cfg, int(hdr[HEADER_LOST_BIT])
                core.provenance_address = int(table[2, 0])
            elif core.binary == LPG_BINARY:
                core.tag = int(self._words(x, y, int(table[1, 0]), LPG_TAG_WORD + 1)[LPG_TAG_WORD])
            core.state = PAUSED  # spin1_start_paused
        except (ValueError, KeyError) as exc:
            log.warning("core %s: run-time error at start-up: %s", where, exc)
            core.state = RUN_TIME_EXCEPTION

    def do_cpu_infos(self, cores) -> List[List[int]]:
        """[state, application id] of each core (IDLE, 0 when nothing is loaded there)."""
        out = []
        for x, y, p in cores:
            core = self.cores.get((x, y, p))
            out.append([core.state, core.app_id] if core is not None else [IDLE, 0])
        return out

    def do_send_signal(self, app_id, signal) -> None:
        if signal == "START":  # loaded cores run c_main
            for where, core in self.cores.items():
                if core.app_id == app_id and not core.started:
                    core.started = True
                    self._c_main(where, core)
            return
        wanted = {"SYNC0": SYNC0, "SYNC1": SYNC1}.get(signal)
        if wanted is None:
            raise ValueError(f"signal {signal} is not modelled by the double")
        started = [c for c in self.cores.values() if c.app_id == app_id and c.state == wanted]
        if started:
            self._board_of(app_id)
        for core in started:
            core.state = RUNNING

    def do_stop_application(self, app_id) -> None:
        for where in [w for w, c in self.cores.items() if c.app_id == app_id]:
            del self.cores[where]
        self.apps.pop(app_id, None)
        for chip, blocks in self.memory.items():
            self.memory[chip] = [b for b in blocks if b[2] != app_id]

    def do_router_dropped(self, x, y) -> int:
        if (x, y) != (0, 0):
            return 0
        return sum(a.board.fault_counts()["dropped"] for a in self.apps.values() if a.board is not None)

    def do_faults(self, drop_datagrams=(), drop_packets=(), stop_core=None, clear=False) -> None:
        """Input datagrams to lose (indices from now), multicast packets the fabric drops
        (indices from now, in the running applications; or in the next one to run), a core
        that stops; clear removes every pending fault first."""
        if clear:
            self.drop_datagrams.clear()
            self.pending_faults.clear()
            for app in self.apps.values():
                if app.board is not None:
                    app.board.drop_packet(None)
        self.drop_datagrams |= {self.datagrams + int(i) for i in drop_datagrams}
        running = [app for app in self.apps.values() if app.board is not None]
        if not running and (drop_packets or stop_core is not None):
            self.pending_faults.append({"drop_packets": list(drop_packets), "stop_core": stop_core})
        for app in running:
            self._apply(app, drop_packets, stop_core)

    @staticmethod
    def _apply(app: App, drop_packets, stop_core) -> None:
        for nth in drop_packets:
            app.board.drop_packet(int(nth))
        label = "{},{},{}".format(*stop_core) if stop_core is not None else None
        if label is not None and label in app.board.core_labels:
            app.board.stop_core(label)

    # -- the board's applications -------------------------------------------------------------------
    def _board_of(self, app_id: int):
        from ..runtime.emulator import EmulatedBoard

        app = self.apps.setdefault(app_id, App())
        if app.board is None:
            kernels = [(f"{x},{y},{p}", (x, y, p), KERNEL_KINDS[c.binary], c.config, c.lost_bit)
                       for (x, y, p), c in sorted(self.cores.items())
                       if c.app_id == app_id and c.binary in KERNEL_KINDS]
            gatherers = [w for w, c in self.cores.items() if c.app_id == app_id and c.binary == LPG_BINARY]
            if len(gatherers) != 1:
                raise ValueError(f"application {app_id} needs exactly one live packet gatherer, has {len(gatherers)}")
            app.gatherer = gatherers[0]
            app.board = EmulatedBoard.from_cores(sorted(self.chips), self.links, app.routes, kernels, app.gatherer)
            for fault in self.pending_faults:
                self._apply(app, fault["drop_packets"], fault["stop_core"])
            self.pending_faults.clear()
        return app.board

    def _provenance(self, where, core: Core) -> None:
        """What the binding's pause stores: front-end-common's system words (0 here: the
        double has no spin1 queues) and ours, from the emulated core's counters."""
        board = self.apps[core.app_id].board
        if board is None or core.binary not in KERNEL_KINDS:
            return
        c = board.core_counters()["{},{},{}".format(*where)]
        values = dict(c, macs_lo=c["macs"] & 0xFFFFFFFF, macs_hi=c["macs"] >> 32)
        words = [0] * len(SYSTEM_PROVENANCE_NAMES) + [values.get(name, 0) & 0xFFFFFFFF for name in PROVENANCE_NAMES]
        self.do_write_memory(where[0], where[1], core.provenance_address, np.array(words, "<u4").tobytes())

    def _control(self, where, command: int) -> None:
        core = self.cores.get(where)
        if core is None:
            return
        if command == CMD_RUNTIME and core.state in (PAUSED, READY):
            core.state = SYNC0 if core.runs % 2 == 0 else SYNC1
            core.runs += 1
        elif command == CMD_PAUSE and core.state == RUNNING:
            self._provenance(where, core)
            core.state = READY
        elif command == CMD_STOP:
            core.state = FINISHED

    def _forward(self, app: App, packets: np.ndarray) -> None:
        """The live packet gatherer: EIEIO KEY_PAYLOAD_32_BIT messages to its IP tag (a packet
        without payload goes as payload 0, as front-end-common 7.4.1's gatherer sends it)."""
        from spinnman.messages.eieio import EIEIOType
        from spinnman.messages.eieio.data_messages import EIEIODataMessage

        tag = self.cores[app.gatherer].tag
        if tag not in self.iptags or not len(packets):
            return
        host, port, _ = self.iptags[tag]
        for start in range(0, len(packets), EVENTS_PER_MESSAGE):
            msg = EIEIODataMessage.create(EIEIOType.KEY_PAYLOAD_32_BIT)
            for key, payload, marker in packets[start:start + EVENTS_PER_MESSAGE]:
                msg.add_key_and_payload(int(key), 0 if marker else int(payload))
            self.out.sendto(msg.bytestring, (host, port))
            self.counts["datagrams_out"] += 1

    def _sdp(self, data: bytes) -> None:
        from spinnman.messages.eieio import read_eieio_data_message
        from spinnman.messages.sdp import SDPMessage

        msg = SDPMessage.from_bytestring(data, 2)
        body = bytes(msg.data)[msg.offset:]
        h = msg.sdp_header
        where = (h.destination_chip_x, h.destination_chip_y, h.destination_cpu)
        if h.destination_port == 3:  # front-end-common's run control
            (command,) = struct.unpack_from("<H", body, 0)
            self._control(where, command)
            return
        core = self.cores.get(where)
        if h.destination_port != 1 or core is None or core.binary != RIPTMCS_BINARY:
            return
        index = self.datagrams
        self.datagrams += 1
        self.counts["datagrams_in"] += 1
        if index in self.drop_datagrams:  # fault: lost on the way in
            self.drop_datagrams.discard(index)
            self.counts["datagrams_dropped"] += 1
            return
        if core.state != RUNNING:
            return
        app = self.apps[core.app_id]
        eieio = read_eieio_data_message(body, 0)
        while eieio.is_next_element:
            e = eieio.next_element
            app.board.inject(where[:2], e.key, getattr(e, "payload", 0) or 0)
        self._forward(app, app.board.drain())
        self.last_input = time.monotonic()

    def _quiet(self) -> None:
        """The cores' lost timeout: no input for LOST_TIMEOUT_TICKS ms releases partial samples."""
        if time.monotonic() - self.last_input < LOST_TIMEOUT_TICKS * 1e-3:
            return
        for app in self.apps.values():
            # a release can leave downstream cores part-filled with markers: their own
            # timeouts fire in turn, as the cores' timers would, until nothing is held
            while app.board is not None and app.board.release():
                self._forward(app, app.board.drain())
        self.last_input = time.monotonic()

    # -- serving ------------------------------------------------------------------------------------
    def _handle(self, conn: socket.socket, buf: bytearray) -> bool:
        try:
            chunk = conn.recv(1 << 20)
        except OSError:
            chunk = b""
        if not chunk:
            return False
        buf += chunk
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            request = decode(line.decode())
            try:
                result = getattr(self, "do_" + request["m"])(**request.get("a", {}))
                reply = {"r": result}
            except Exception as exc:  # the caller gets the reason as a BoardError
                reply = {"e": f"{type(exc).__name__}: {exc}"}
            conn.sendall(encode(reply).encode())
        return True

    def serve_forever(self) -> None:
        buffers: Dict[socket.socket, bytearray] = {}
        while self._running:
            for key, _ in self.selector.select(timeout=0.005):
                if key.data == "accept":
                    conn, _ = self.listener.accept()
                    conn.setblocking(True)
                    buffers[conn] = bytearray()
                    self.selector.register(conn, selectors.EVENT_READ, "control")
                elif key.data == "sdp":
                    while True:
                        try:
                            self._sdp(self.udp.recv(65536, socket.MSG_DONTWAIT))
                        except BlockingIOError:
                            break
                else:
                    conn = key.fileobj
                    if not self._handle(conn, buffers[conn]):
                        self.selector.unregister(conn)
                        conn.close()
                        del buffers[conn]
            self._quiet()

    def stop(self) -> None:
        self._running = False
