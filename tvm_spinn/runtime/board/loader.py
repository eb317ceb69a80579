"""Load a board program onto a SpiNNaker machine through a spinnman ``Transceiver`` and
drive front-end-common's simulation interface (the host side of ``spin1_binding.h``).

Everything here goes through the transceiver's own methods, with the toolchain's own
classes (``CoreSubsets``, ``MulticastRoutingEntry``, ``IPTag``, ``SDPMessage``, ``CPUState``,
``Signal``): the same calls reach a real board (spinnman's transceiver) and the board
double (:class:`~tvm_spinn.runtime.board.double_link.DoubleTransceiver`).

Loading follows front-end-common 7.4.1's data-spec loader (load_data_specification.py):
per core one SDRAM block (malloc tag 200 + p), the region table (magic 0xAD130AD6,
version 0x00010000, 32 x {pointer, checksum, n_words}) at its start, its address in the
core's user0 register; then routing tables, the live packet gatherer's IP tag, and the
binaries (``execute_flood`` with wait, READY, then the START signal: c_main ends PAUSED).
Run control as front-end-common's: CMD_RUNTIME (SDP port 3)
to every core, SYNC0/SYNC1 alternating per run, CMD_PAUSE to end a run; every core
signals READY after storing provenance.
"""
from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ...errors import BoardError
from ...machine.graph import (CONFIG_REGION, KERNEL_BINARIES, LOST_TIMEOUT_TICKS, PROVENANCE_NAMES,
                              PROVENANCE_REGION, SYSTEM_PROVENANCE_NAMES, frame_config)
from ...program import BoardProgram

log = logging.getLogger(__name__)

# front-end-common 7.4.1 (utilities/constants.py, interface/ds): the data-spec region table.
APPDATA_MAGIC_NUM = 0xAD130AD6
DSE_VERSION = 0x00010000
MAX_MEM_REGIONS = 32
APP_PTR_TABLE_BYTE_SIZE = 8 + MAX_MEM_REGIONS * 12
CORE_DATA_SDRAM_BASE_TAG = 200
# spinnman 7.4.1 model/enums: SDP_PORTS and SDP_RUNNING_MESSAGE_CODES (simulation.h's commands)
RUNNING_COMMAND_SDP_PORT = 3
CMD_STOP, CMD_RUNTIME, CMD_PAUSE = 6, 7, 10
# The kernels' binaries: built by ``make -C c_runtime SPINN_DIRS=...`` into c_runtime/build/aplx.
APLX_ENV = "TVM_SPINN_APLX_DIR"
DEFAULT_APLX_DIR = Path(__file__).resolve().parents[3] / "c_runtime" / "build" / "aplx"
OUR_BINARIES = frozenset(KERNEL_BINARIES.values())
def setting(name: str, default: float, minimum: float = 0.0) -> float:
    """A positive number from the environment variable ``name`` (BoardError naming it if not)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > minimum or value == float("inf"):
        raise BoardError(f"{name}={text!r}: expected a number above {minimum:g}; unset it for the default {default:g}")
    return value


def state_timeout() -> float:
    """Seconds to wait for every core to reach a state (``TVM_SPINN_STATE_TIMEOUT``, default 20:
    a SpiNN-5 board answers a state poll in a few ms; flood-loading ~800 binaries takes ~1 s)."""
    return setting("TVM_SPINN_STATE_TIMEOUT", 20.0)


# Core states in which a core is free for a new application (spinnman CPUState names).
FREE_STATES = ("IDLE", "DEAD", "FINISHED", "POWERED_DOWN")
# SDP control messages sent before pausing for SCAMP to catch up: it holds about 8 SDP
# messages in flight (spinnaker_tools PR #25; ../notes/board.md).
SDP_BURST = 8
SDP_BURST_PAUSE_S = 0.001


def aplx_dir() -> Path:
    return Path(os.environ.get(APLX_ENV) or DEFAULT_APLX_DIR)


def binary_path(name: str, need_file: bool) -> str:
    """Where the .aplx ``name`` is: ours in :func:`aplx_dir`, front-end-common's live IO
    binaries in its package. A board double runs the host build of the same C code and only
    needs the name (need_file False). Raises BoardError naming the directory and the build
    command when a binary a real board needs is missing."""
    if name in OUR_BINARIES:
        path = aplx_dir() / name
        if path.is_file():
            return str(path)
        if not need_file:
            return name
        raise BoardError(
            f"the kernel binary {name} is not in {path.parent}: build the kernels against an installed "
            f"SpiNNaker SDK with `make -C c_runtime SPINN_DIRS=/path/to/spinnaker_tools` (see README, "
            f"'Running on a board'), or point {APLX_ENV} at a directory holding them")
    if not need_file:
        return name
    from spinn_front_end_common import common_model_binaries

    path = Path(common_model_binaries.__file__).parent / name
    if not path.is_file():
        raise BoardError(f"front-end-common's binary {name} is missing from its package ({path})")
    return str(path)


def core_regions(im, kernels: Dict[str, object]) -> Dict[int, bytes]:
    """The bytes of each region ``im`` loads; kernels: label -> CoreProgram of the program's own
    kernels, whose config region is framed from the program's config words (the stored
    program leaves it out of the image)."""
    data = dict(im.region_data)
    core = kernels.get(im.label)
    if core is not None:
        data[CONFIG_REGION] = frame_config(np.asarray(core.config, np.uint32), LOST_TIMEOUT_TICKS,
                                           core.lost_bit, core.send_gap, core.send_phase).astype("<u4").tobytes()
    return data


def _words_sum(data: bytes) -> Tuple[int, int]:
    """(checksum, n_words) of a region as front-end-common's loader computes them."""
    padded = data + b"\0" * (-len(data) % 4)
    words = np.frombuffer(padded, "<u4")
    return int(words.astype(np.uint64).sum()) & 0xFFFFFFFF, len(words)


class BoardLoader:
    """One program loaded on a machine: load, run control, provenance, stop.

    txrx: a spinnman Transceiver (or the board double's). program: the BoardProgram.
    board_ip: the Ethernet address of chip (0, 0). host_address: (ip, port) the live packet
    gatherer's IP tag sends to. Raises BoardError for a machine the program does not fit,
    missing binaries, or cores that do not reach a state in STATE_TIMEOUT seconds.
    """

    def __init__(self, txrx, program: BoardProgram, board_ip: str, host_address: Tuple[str, int],
                 is_double: bool = False) -> None:
        if not program.images:
            raise BoardError(f"{program.name or 'this program'} was built by a tvm_spinn without board images "
                             "(BoardProgram.images is empty): rebuild the model to run it on a board")
        self.txrx, self.program, self.board_ip = txrx, program, board_ip
        self.host_address = host_address
        self.is_double = is_double
        self.app_id = int(program.app_id or 30)
        self.images = list(program.images)
        self.by_label = {im.label: im for im in self.images}
        self.by_xyp = {tuple(im.placement): im.label for im in self.images}
        # every kernel core on the board (the functions mapped with this one included)
        self.kernel_labels = [im.label for im in self.images if im.binary in OUR_BINARIES]
        self._kernels = {c.label: c for c in program.cores}  # this function's own kernels
        self.provenance_address: Dict[str, int] = {}
        self.loaded = False  # anything written to the board (so stopping the application is ours to do)
        self._runs = 0  # runs started: SYNC0 for even, SYNC1 for odd (spin1 flips event.wait)
        self._all = None

    # -- loading ------------------------------------------------------------------------
    def _check_machine(self) -> None:
        machine = self.txrx.get_machine_details()
        for im in self.images:
            x, y, p = im.placement
            chip = machine.get_chip_at(x, y)
            if chip is None or p not in set(chip.placable_processors_ids):
                raise BoardError(
                    f"core ({x}, {y}, {p}), where the build placed {im.label}, is not available on this machine "
                    f"(a dead chip or core, or a smaller machine): the build mapped a whole {self.program.board or 'SpiNN-5'}. "
                    f"Use another board, or rebuild against this machine")


    def load(self) -> None:
        """Allocate and write every core's regions, load routing tables, the IP tag and the
        binaries; returns when every core waits in PAUSED (after c_main)."""
        from spinn_machine import CoreSubsets, MulticastRoutingEntry, RoutingEntry
        from spinn_machine.tags import IPTag
        from spinnman.model.enums import CPUState, UserRegister

        self._check_machine()
        self._all = CoreSubsets()
        for im in self.images:
            self._all.add_processor(*im.placement)
        self._check_free()
        txrx = self.txrx
        self.loaded = True
        for im in self.images:
            x, y, p = im.placement
            data = core_regions(im, self._kernels)
            sizes = dict(im.region_sizes)
            for num, blob in data.items():
                sizes[num] = max(sizes.get(num, 0), len(blob))
            base = txrx.malloc_sdram(x, y, sum(sizes.values()) + APP_PTR_TABLE_BYTE_SIZE, self.app_id,
                                     tag=CORE_DATA_SDRAM_BASE_TAG + p)
            table = np.zeros((MAX_MEM_REGIONS, 3), np.uint32)
            pointer = base + APP_PTR_TABLE_BYTE_SIZE
            for num in sorted(sizes):
                table[num, 0] = pointer
                if num in data and data[num]:
                    txrx.write_memory(x, y, pointer, data[num])
                    table[num, 1], table[num, 2] = _words_sum(data[num])
                if num == PROVENANCE_REGION and im.binary in OUR_BINARIES:
                    self.provenance_address[im.label] = pointer
                pointer += sizes[num]
            header = np.array([APPDATA_MAGIC_NUM, DSE_VERSION], np.uint32)
            txrx.write_memory(x, y, base, np.concatenate([header, table.reshape(-1)]).astype("<u4").tobytes())
            txrx.write_user(x, y, p, UserRegister.USER_0, base)
        for (x, y), rows in self.program.routing_tables.items():
            entries = [MulticastRoutingEntry(int(k), int(m), RoutingEntry(spinnaker_route=int(r)))
                       for k, m, r in np.asarray(rows, np.uint32).reshape(-1, 3)]
            txrx.load_multicast_routes(int(x), int(y), entries, self.app_id)
        host_ip, port = self.host_address
        for tag in self.program.iptags:  # set on the board whose Ethernet chip holds the tag
            txrx.set_ip_tag(IPTag(self._board_address(tag.eth_x, tag.eth_y), tag.eth_x, tag.eth_y, tag.tag, host_ip,
                                  port, tag.strip_sdp))
        by_binary: Dict[str, List[Tuple[int, int, int]]] = {}
        for im in self.images:
            by_binary.setdefault(im.binary, []).append(tuple(im.placement))
        for name, cores in by_binary.items():
            subsets = CoreSubsets()
            for x, y, p in cores:
                subsets.add_processor(x, y, p)
            txrx.execute_flood(subsets, binary_path(name, need_file=not self.is_double), self.app_id, wait=True)
        # As front-end-common's load_executable_images: loaded cores wait in READY for START;
        # c_main then ends in spin1_start_paused (PAUSED), waiting for the run control.
        from spinnman.messages.scp.enums import Signal

        self._wait(CPUState.READY, "loading the binaries")
        txrx.send_signal(self.app_id, Signal.START)
        self._wait(CPUState.PAUSED, "start-up (c_main)")

    def _board_address(self, eth_x: int, eth_y: int) -> str:
        """The IP address of the board whose Ethernet chip is (eth_x, eth_y) (board_ip for
        chip (0, 0), and where the machine does not say)."""
        if (eth_x, eth_y) == (0, 0):
            return self.board_ip
        chip = self.txrx.get_machine_details().get_chip_at(eth_x, eth_y)
        return getattr(chip, "ip_address", None) or self.board_ip

    def _check_free(self) -> None:
        """Refuse a board whose cores another application (another process, another model)
        holds: loading over it would corrupt both, silently."""
        from spinnman.model.enums import CPUState

        free = [CPUState[name] for name in FREE_STATES]
        busy = self.txrx.get_cpu_infos(self._all, free, include=False)
        if len(busy):
            x, y, p = next(iter(busy))
            info = busy.get_cpu_info(x, y, p)
            raise BoardError(
                f"{len(busy)} of the cores this model needs are in use on the board, e.g. ({x}, {y}, {p}): "
                f"application {info.application_id}, state {info.state.name}. Another process or model holds "
                f"this board: stop it (tvm_spinn.use_board(vm, 'emulator') there, or end that process) or use "
                f"another board")

    def health(self) -> None:
        """Raise BoardError if the board does not answer, or if a core of this application
        stopped with an error (run-time exception, watchdog)."""
        from spinnman.model.enums import CPUState

        bad = self.txrx.get_cpu_infos(self._all, [CPUState.RUN_TIME_EXCEPTION, CPUState.WATCHDOG], include=True)
        if len(bad):
            cores = ", ".join(f"({x}, {y}, {p}) {self.by_xyp.get((x, y, p), '?')}" for x, y, p in list(bad)[:5])
            raise BoardError(f"{len(bad)} cores of this model stopped with an error on the board: {cores}. "
                             f"Reload the board (tvm_spinn.use_board(vm, <the same board>))")

    # -- run control ----------------------------------------------------------------------
    def _wait(self, state, what: str) -> None:
        from spinnman.model.enums import CPUState

        timeout = state_timeout()
        try:
            self.txrx.wait_for_cores_to_be_in_state(self._all, self.app_id, [state],
                                                    timeout=timeout,
                                                    time_between_polls=0.005 if self.is_double else 0.05,
                                                    error_states=frozenset({CPUState.RUN_TIME_EXCEPTION,
                                                                            CPUState.WATCHDOG}))
        except BoardError as exc:  # the board double's own (connection lost, refused call)
            raise BoardError(f"{what}: {exc}") from None
        except Exception as exc:  # spinnman's SpinnmanTimeoutException / SpiNNManCoresNotInStateException
            raise BoardError(f"{what}: the cores did not all reach {state.name} within {timeout:g} s "
                             f"({type(exc).__name__}: {str(exc)[:300]})") from None

    def _control(self, command: int, args: Tuple[int, int, int] = (0, 0, 0), data: bytes = b"") -> None:
        """An SCP-format command of front-end-common's simulation interface to every core."""
        from spinnman.messages.sdp import SDPFlag, SDPHeader, SDPMessage

        body = struct.pack("<HHIII", command, 0, *args) + data
        for i, im in enumerate(self.images):
            x, y, p = im.placement
            header = SDPHeader(flags=SDPFlag.REPLY_NOT_EXPECTED, destination_port=RUNNING_COMMAND_SDP_PORT,
                               destination_cpu=p, destination_chip_x=x, destination_chip_y=y, source_port=0,
                               source_cpu=0, source_chip_x=0, source_chip_y=0, tag=0)
            self.txrx.send_sdp_message(SDPMessage(header, data=body))
            if i % SDP_BURST == SDP_BURST - 1 and not self.is_double:
                time.sleep(SDP_BURST_PAUSE_S)

    def start(self) -> None:
        """Start (or resume) a run with no end: CMD_RUNTIME (infinite), then SYNC0/SYNC1."""
        from spinnman.messages.scp.enums import Signal
        from spinnman.model.enums import CPUState

        sync = (CPUState.SYNC0, Signal.SYNC0) if self._runs % 2 == 0 else (CPUState.SYNC1, Signal.SYNC1)
        # arg1 run ticks (unused when infinite), arg2 infinite run, arg3 start time; data: n_sync_steps
        self._control(CMD_RUNTIME, (0, 1, 0), struct.pack("<I", 0))
        self._wait(sync[0], "run start (CMD_RUNTIME)")
        self.txrx.send_signal(self.app_id, sync[1])
        self._wait(CPUState.RUNNING, f"run start ({sync[1].name})")
        self._runs += 1

    def pause(self) -> None:
        """End the run: CMD_PAUSE; every core stores provenance and signals READY."""
        from spinnman.model.enums import CPUState

        self._control(CMD_PAUSE)
        self._wait(CPUState.READY, "pause (CMD_PAUSE)")

    def read_provenance(self) -> Dict[str, Dict[str, int]]:
        """label -> provenance counters of every kernel core (after :meth:`pause`):
        front-end-common's system words and ours (PROVENANCE_NAMES)."""
        n_words = len(SYSTEM_PROVENANCE_NAMES) + len(PROVENANCE_NAMES)
        out = {}
        for label in self.kernel_labels:
            x, y, _ = self.by_label[label].placement
            raw = self.txrx.read_memory(x, y, self.provenance_address[label], 4 * n_words)
            words = np.frombuffer(bytes(raw), "<u4")
            out[label] = dict(zip(SYSTEM_PROVENANCE_NAMES + PROVENANCE_NAMES, (int(v) for v in words)))
        return out

    def router_drops(self) -> int:
        """Multicast packets the routers dropped (router diagnostics of every chip used)."""
        total = 0
        for x, y in {tuple(im.placement[:2]) for im in self.images}:
            try:
                total += int(self.txrx.get_router_diagnostics(x, y).n_dropped_multicast_packets)
            except Exception as exc:  # a board double may not model the counter
                log.debug("router diagnostics of (%d, %d): %s", x, y, exc)
        return total

    def stop(self) -> None:
        """Stop the application: its cores, SDRAM and routes are freed by SCAMP."""
        self.txrx.stop_application(self.app_id)
