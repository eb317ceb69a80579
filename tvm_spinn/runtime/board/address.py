"""What ``TVM_SPINN_BOARD`` names: the emulator, a board, a spalloc server or a board double.

    unset, "", "emulator"          the emulator (default)
    <hostname or IP>               a SpiNN-5 board on the user's network
    spalloc://<server>[:<port>]    a board allocated from a spalloc server (the user's
                                   spalloc config, ~/.config/spalloc or ./.spalloc, gives the owner)
    double://<host>:<port>         a board double (``python -m tvm_spinn.board_double``)
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import BoardError

BOARD_ENV = "TVM_SPINN_BOARD"
SPALLOC_DEFAULT_PORT = 22244  # spalloc's default (spalloc_client.ProtocolClient)

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class BoardAddress:
    """kind: "emulator", "host", "spalloc" or "double"; host and port where they apply."""

    kind: str
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "emulator":
            return "the emulator"
        if self.kind == "host":
            return f"the board at {self.host}"
        return f"{self.kind}://{self.host}:{self.port}"


def _host_port(rest: str, value: str, default_port: int) -> tuple:
    host, sep, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not sep:
        host, port = rest, ""
    if not host or not _HOST.match(host):
        raise BoardError(f"{BOARD_ENV}={value!r}: {host!r} is not a hostname or IP address")
    if port == "":
        if default_port <= 0:
            raise BoardError(f"{BOARD_ENV}={value!r}: a port is needed (host:port)")
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BoardError(f"{BOARD_ENV}={value!r}: port {port!r} is not a number in 1..65535")
    return host, int(port)


def parse_board_address(value) -> BoardAddress:
    """Parse a ``TVM_SPINN_BOARD`` value (see the module doc). Raises BoardError for a value
    that is none of the forms, naming the forms."""
    text = (value or "").strip()
    if text.lower() in ("", "emulator"):
        return BoardAddress("emulator")
    scheme, sep, rest = text.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme == "spalloc":
            return BoardAddress("spalloc", *_host_port(rest, text, SPALLOC_DEFAULT_PORT))
        if scheme == "double":
            return BoardAddress("double", *_host_port(rest, text, 0))
        raise BoardError(f"{BOARD_ENV}={text!r}: unknown scheme {scheme!r}; use emulator, a hostname or IP, "
                         "spalloc://server[:port] or double://host:port")
    if not _HOST.match(text):
        raise BoardError(f"{BOARD_ENV}={text!r} is not a hostname or IP address; use emulator, a hostname or IP, "
                         "spalloc://server[:port] or double://host:port")
    return BoardAddress("host", text)
