"""How a :class:`~tvm_spinn.program.BoardProgram` is stored in a ``"spinnaker"`` runtime module.

The module's payload is :mod:`tvm_spinn.serialization`'s layout with magic ``b"SPINNPRG"``
and the format version :data:`PROGRAM_FORMAT`: a JSON header describing the program's
dataclasses (field by field) plus raw little-endian arrays (weights, config words, routing
tables). Loading builds only the program's own dataclasses and numeric arrays, so an
exported module never runs code from its payload.

Versions:

1. (tvm_spinn before the operator graph) a pickled dict; refused, never unpickled.
2. this layout.
"""
from __future__ import annotations

from .. import serialization
from ..errors import ProgramFormatError
from .board import BoardProgram

PROGRAM_FORMAT = 2
MAGIC = b"SPINNPRG"
_PICKLE_PROTOCOL_2_TO_5 = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def dump_program(program: BoardProgram) -> bytes:
    """The bytes of ``program`` in format :data:`PROGRAM_FORMAT`."""
    return serialization.dumps(program, MAGIC, PROGRAM_FORMAT)


def load_program(payload: bytes) -> BoardProgram:
    """The program stored in a module payload. Raises ProgramFormatError, naming both
    versions, for a program of another format version (e.g. one exported by an older
    tvm_spinn: rebuild the model), and for bytes that are not a program."""
    payload = bytes(payload)
    if payload[:2] in _PICKLE_PROTOCOL_2_TO_5:
        raise ProgramFormatError(
            f"this spinnaker module holds a board program of format version 1 (a pickled program of an older "
            f"tvm_spinn); this tvm_spinn reads format version {PROGRAM_FORMAT} only. Rebuild the model with "
            "tvm_spinn.build and export it again (old payloads are never unpickled: that could run code)")
    try:
        version = serialization.read_version(payload, MAGIC)
    except serialization.FormatError:
        raise ProgramFormatError("this spinnaker module's payload is not a tvm_spinn board program") from None
    if version != PROGRAM_FORMAT:
        raise ProgramFormatError(
            f"this spinnaker module holds a board program of format version {version}; this tvm_spinn reads "
            f"format version {PROGRAM_FORMAT} only. Rebuild the model with the tvm_spinn that matches "
            "(or rebuild it with this one)")
    try:
        return serialization.loads(payload, BoardProgram, MAGIC)
    except serialization.FormatError as exc:
        raise ProgramFormatError(f"corrupt board program (format version {version}): {exc}") from None
