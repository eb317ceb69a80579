"""The host's link to a board double (``python -m tvm_spinn.board_double``).

:class:`DoubleTransceiver` has the methods of spinnman's ``Transceiver`` that the board
runtime calls, with the same names and arguments and the toolchain's own argument classes
(``CoreSubsets``, ``MulticastRoutingEntry``, ``IPTag``, ``SDPMessage``, ``CPUState``,
``Signal``). Two channels, as a board has:

- **control** (what SCAMP's SCP does on a board: memory, user registers, routing tables,
  IP tags, binaries, signals, core states): one JSON line per call over TCP to the double;
- **SDP datagrams** (``send_sdp_message``): real UDP datagrams in SCAMP's framing (two
  padding bytes, the 8-byte SDP header, the data) to the double's SDP port, as spinnman's
  SCAMP connection sends them to port 17893 of a board.

The double answers live output as a board's live packet gatherer does: EIEIO datagrams to
the address of the IP tag.
"""
from __future__ import annotations

import base64
import json
import socket
from typing import Dict, List, Tuple

from ...errors import BoardError


def encode(obj) -> str:
    """One JSON line; bytes travel as {"b64": ...}."""
    def conv(v):
        if isinstance(v, (bytes, bytearray, memoryview)):
            return {"b64": base64.b64encode(bytes(v)).decode()}
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v
    return json.dumps(conv(obj)) + "\n"


def decode(line: str):
    def conv(v):
        if isinstance(v, dict):
            if set(v) == {"b64"}:
                return base64.b64decode(v["b64"])
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v
    return conv(json.loads(line))


class _Chip:
    def __init__(self, x: int, y: int, cores: List[int], ip: str) -> None:
        self.x, self.y, self.placable_processors_ids, self.ip_address = x, y, tuple(cores), ip


class _Machine:
    """What ``get_machine_details`` gives the loader: chips and their application cores."""

    def __init__(self, chips: Dict[Tuple[int, int], _Chip]) -> None:
        self._chips = chips

    def get_chip_at(self, x: int, y: int):
        return self._chips.get((x, y))


class _CPUInfo:
    def __init__(self, x: int, y: int, p: int, state: int, app_id: int) -> None:
        from spinnman.model.enums import CPUState

        self.x, self.y, self.p, self.state, self.application_id = x, y, p, CPUState(state), app_id


class _CPUInfos:
    """The part of spinnman's CPUInfos the loader reads: iteration over (x, y, p), len, get_cpu_info."""

    def __init__(self, infos) -> None:
        self._infos = {(i.x, i.y, i.p): i for i in infos}

    def __iter__(self):
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def get_cpu_info(self, x: int, y: int, p: int) -> _CPUInfo:
        return self._infos[(x, y, p)]


class _RouterDiagnostics:
    def __init__(self, dropped: int) -> None:
        self.n_dropped_multicast_packets = dropped


class DoubleTransceiver:
    """A spinnman-Transceiver-shaped client of a board double at (host, port).

    Raises BoardError when the double cannot be reached or refuses a call (its message)."""

    is_double = True

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        try:
            self._control = socket.create_connection((host, port), timeout=5.0)
        except OSError as exc:
            raise BoardError(f"no board double at {host}:{port} ({exc.strerror or exc}); start one with "
                             "`python -m tvm_spinn.board_double` and use the TVM_SPINN_BOARD value it prints") from None
        self._file = self._control.makefile("r", encoding="utf-8")
        self.host = host
        try:
            hello = self._call("hello")
            if not isinstance(hello, dict) or "sdp_port" not in hello:
                raise BoardError("unexpected answer")
        except BoardError as exc:
            self.close_control()
            raise BoardError(f"{host}:{port} is not a tvm_spinn board double ({exc}); start one with "
                             "`python -m tvm_spinn.board_double` and use the TVM_SPINN_BOARD value it prints") from None
        self._control.settimeout(timeout)
        self.sdp_port = int(hello["sdp_port"])
        self.board_ip = hello["board_ip"]
        self._sdp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def _call(self, method: str, **args):
        try:
            self._control.sendall(encode({"m": method, "a": args}).encode())
            line = self._file.readline()
        except OSError as exc:
            raise BoardError(f"board double at {self.host} stopped answering ({method}: {exc})") from None
        if not line:
            raise BoardError(f"board double at {self.host} closed the connection during {method} (it stopped?)")
        try:
            reply = decode(line)
            if not isinstance(reply, dict):
                raise ValueError(type(reply).__name__)
        except ValueError as exc:
            raise BoardError(f"board double at {self.host}: {method}: malformed answer ({exc})") from None
        if "e" in reply:
            raise BoardError(f"board double: {method}: {reply['e']}")
        return reply.get("r")

    # -- the Transceiver methods the board runtime uses --------------------------------------
    def get_machine_details(self) -> _Machine:
        info = self._call("machine")
        return _Machine({(x, y): _Chip(x, y, cores, ip) for x, y, cores, ip in info["chips"]})

    def malloc_sdram(self, x: int, y: int, size: int, app_id: int, tag: int = 0) -> int:
        return int(self._call("malloc_sdram", x=x, y=y, size=int(size), app_id=app_id, tag=tag))

    def write_memory(self, x: int, y: int, base_address: int, data, **_) -> Tuple[int, int]:
        data = bytes(data)
        self._call("write_memory", x=x, y=y, address=int(base_address), data=data)
        return len(data), 0

    def read_memory(self, x: int, y: int, base_address: int, length: int, cpu: int = 0) -> bytearray:
        return bytearray(self._call("read_memory", x=x, y=y, address=int(base_address), length=int(length)))

    def write_user(self, x: int, y: int, p: int, user, value: int) -> None:
        self._call("write_user", x=x, y=y, p=p, user=int(getattr(user, "value", user)), value=int(value))

    def load_multicast_routes(self, x: int, y: int, routes, app_id: int) -> None:
        rows = [[int(r.key), int(r.mask), int(r.spinnaker_route)] for r in routes]
        self._call("load_multicast_routes", x=x, y=y, routes=rows, app_id=app_id)

    def set_ip_tag(self, ip_tag, use_sender: bool = False) -> None:
        self._call("set_ip_tag", tag=int(ip_tag.tag), host=ip_tag.ip_address, port=int(ip_tag.port),
                   strip_sdp=bool(ip_tag.strip_sdp))

    def execute_flood(self, core_subsets, executable, app_id: int, *, n_bytes=None, wait: bool = False) -> None:
        import os

        cores = [[int(c.x), int(c.y), int(p)] for c in core_subsets for p in c.processor_ids]
        self._call("execute_flood", cores=cores, binary=os.path.basename(str(executable)), app_id=app_id)

    def wait_for_cores_to_be_in_state(self, all_core_subsets, app_id: int, cpu_states, *, timeout=None,
                                      time_between_polls: float = 0.1, error_states=frozenset(), **_) -> None:
        import time

        from spinnman.model.enums import CPUState

        wanted = {int(s.value) for s in ([cpu_states] if isinstance(cpu_states, CPUState) else cpu_states)}
        bad = {int(s.value) for s in error_states}
        cores = [[int(c.x), int(c.y), int(p)] for c in all_core_subsets for p in c.processor_ids]
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while True:
            # a core of another application counts as DEAD for this one, as SCAMP's count does
            states = [state if app == app_id else int(CPUState.DEAD)
                      for state, app in self._call("cpu_infos", cores=cores)]
            if all(s in wanted for s in states):
                return
            failed = [tuple(c) for c, s in zip(cores, states) if s in bad]
            if failed:
                raise BoardError(f"cores {failed[:8]} are in an error state "
                                 f"({CPUState(states[cores.index(list(failed[0]))]).name})")
            if time.monotonic() > deadline:
                late = [(tuple(c), CPUState(s).name) for c, s in zip(cores, states) if s not in wanted]
                raise BoardError(f"{len(late)} cores not in state {sorted(CPUState(s).name for s in wanted)} "
                                 f"after {timeout} s, e.g. {late[:5]}")
            time.sleep(time_between_polls)

    def send_signal(self, app_id: int, signal) -> None:
        self._call("send_signal", app_id=app_id, signal=signal.name)

    def send_sdp_message(self, message, connection=None) -> None:
        message.sdp_header.update_for_send(0, 0)  # as spinnman's SDP connection does
        self._sdp.sendto(b"\0\0" + message.bytestring, (self.host, self.sdp_port))

    def get_router_diagnostics(self, x: int, y: int) -> _RouterDiagnostics:
        return _RouterDiagnostics(int(self._call("router_dropped", x=x, y=y)))

    def stop_application(self, app_id: int) -> None:
        self._call("stop_application", app_id=app_id)

    def clear_ip_tag(self, tag: int, board_address=None) -> None:
        self._call("clear_ip_tag", tag=int(tag))

    def get_cpu_infos(self, core_subsets=None, states=None, include: bool = True) -> _CPUInfos:
        from spinnman.model.enums import CPUState

        cores = [[int(c.x), int(c.y), int(p)] for c in core_subsets for p in c.processor_ids]
        answers = self._call("cpu_infos", cores=cores)
        infos = [_CPUInfo(x, y, p, state, app_id) for (x, y, p), (state, app_id) in zip(cores, answers)]
        if states is not None:
            wanted = {states} if isinstance(states, CPUState) else set(states)
            infos = [i for i in infos if (i.state in wanted) == include]
        return _CPUInfos(infos)

    def close_control(self) -> None:
        for s in (self._file, self._control):
            try:
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        for s in (self._file, self._control, self._sdp):
            try:
                s.close()
            except OSError:
                pass

    # -- the double's own: fault injection for tests ------------------------------------------
    def inject_faults(self, **faults) -> None:
        """drop_datagrams: indices (from now, 0 = the next) of input datagrams to lose;
        drop_packets: indices of multicast packets the fabric drops; stop_core: [x, y, p] of
        a core that stops taking packets; clear: remove every fault."""
        self._call("faults", **faults)
