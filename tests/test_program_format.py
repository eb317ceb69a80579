"""The board program as stored in a "spinnaker" runtime module (tvm_spinn/program/format.py):
a round trip keeps every field, programs of another format version are refused with both
versions named, and loading never runs code from the payload (no pickle)."""
from __future__ import annotations

import dataclasses
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import tvm_spinn
from tvm_spinn import report, serialization
from tvm_spinn.program import PROGRAM_FORMAT, BoardProgram, dump_program, load_program
from tvm_spinn.program.format import MAGIC
from tvm_spinn.quantization import quantize_tensor
from tvm_spinn.runtime import create_executor, integer_reference
from tvm_spinn.runtime.emulator import EmulatedBoard


@pytest.fixture(scope="module")
def program() -> BoardProgram:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(32, 5), torch.nn.Tanh()).eval()
    x = torch.randn(64, 2, 8)
    ex = tvm_spinn.build(tvm_spinn.from_torch(model, (x[:2],)), calibration=x.numpy())
    (p,) = report.programs(ex)
    return p


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype \
            and np.array_equal(a, b)
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(_equal(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_round_trip_keeps_every_field_and_the_integers(program, rng):
    blob = dump_program(program)
    assert blob[:8] == MAGIC and struct.unpack_from("<I", blob, 8)[0] == PROGRAM_FORMAT
    again = load_program(blob)
    assert _equal(program, again)
    assert dump_program(again) == blob
    # The loaded program computes the same integers, on the board and in the reference.
    x_q = quantize_tensor(rng.normal(size=(20, 16)).astype(np.float32), again.input_scale)
    np.testing.assert_array_equal(EmulatedBoard(again).run(x_q), integer_reference(program, x_q))


def test_program_of_format_1_is_refused_naming_both_versions_and_never_unpickled(tmp_path: Path):
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    old = pickle.dumps({"format": 1, "symbol": "f", "payload": Evil()}, protocol=5)
    for load in (load_program, lambda p: create_executor("f", p, 123456)):
        with pytest.raises(tvm_spinn.ProgramFormatError, match=r"format version 1.*format version 2"):
            load(old)
    assert not marker.exists(), "an old payload was unpickled"


def test_program_of_an_unknown_version_is_refused(program):
    blob = bytearray(dump_program(program))
    struct.pack_into("<I", blob, 8, 7)
    with pytest.raises(tvm_spinn.ProgramFormatError, match=r"format version 7.*format version 2"):
        load_program(bytes(blob))


def test_corrupt_payloads_are_refused(program):
    blob = dump_program(program)
    with pytest.raises(tvm_spinn.ProgramFormatError, match="not a tvm_spinn board program"):
        load_program(b"2.0")
    with pytest.raises(tvm_spinn.ProgramFormatError, match="corrupt"):
        load_program(blob[:len(blob) // 2])


def test_object_arrays_and_unknown_types_are_never_built():
    @dataclasses.dataclass
    class Holder:
        a: np.ndarray

    blob = serialization.dumps(Holder(np.arange(3)), b"TESTTEST", 1)
    n = struct.unpack_from("<I", blob, 12)[0]
    header = json.loads(blob[16:16 + n])
    header["arrays"][0]["dtype"] = "|O"
    evil = json.dumps(header).encode()
    forged = blob[:12] + struct.pack("<I", len(evil)) + evil + b"\0" * (-(16 + len(evil)) % 8) + \
        blob[16 + n + (-(16 + n) % 8):]
    with pytest.raises(serialization.FormatError, match="bad array entry"):
        serialization.loads(forged, Holder, b"TESTTEST")
    header["arrays"][0]["dtype"] = "<i8"
    header["root"]["$type"] = "os.system"
    evil = json.dumps(header).encode()
    forged = blob[:12] + struct.pack("<I", len(evil)) + evil + b"\0" * (-(16 + len(evil)) % 8) + \
        blob[16 + n + (-(16 + n) % 8):]
    with pytest.raises(serialization.FormatError, match="expected a Holder"):
        serialization.loads(forged, Holder, b"TESTTEST")
