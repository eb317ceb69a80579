"""Typed dataclasses to bytes and back without pickle: a JSON header plus raw arrays.

Layout (all integers little-endian)::

    bytes 0..7      magic (chosen by the caller, e.g. b"SPINNPRG")
    bytes 8..11     format version (uint32)
    bytes 12..15    header length H in bytes (uint32)
    bytes 16..16+H  header: UTF-8 JSON {"root": <value>, "arrays": [{"dtype", "shape", "offset", "nbytes"}, ...]}
    then zero padding to a multiple of 8, then the array data (each array at an 8-aligned
    offset, relative to the start of the data, in the little-endian dtype the header names)

Values in the header: a dataclass is an object of its fields (plus ``"$type"`` when the
declared type is a union of dataclasses); a numpy array is ``{"$array": i}`` and ``bytes``
``{"$bytes": i}`` (index into ``arrays``); tuples and lists are lists; a dict is a list of
``[key, value]`` pairs (keys may be tuples); None, bool, int, float and str are themselves.

Decoding is driven by the declared field types of the root dataclass: it builds only those
dataclasses, builtins and numeric numpy arrays (no object dtype), so reading a blob never
runs code from it. Fields whose metadata has ``transient=True`` are not stored (decoded as
their default).
"""
from __future__ import annotations

import dataclasses
import json
import struct
import typing
from typing import Any, Dict, List, Tuple, Type, TypeVar

import numpy as np

T = TypeVar("T")
_PREFIX = struct.Struct("<8sII")
_ALIGN = 8
_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: never object or void


class FormatError(ValueError):
    """A blob that is not what the reader expects (magic, version, header or arrays)."""


def transient(default: Any = None) -> Any:
    """A dataclass field that is kept in memory but not serialised (decoded as ``default``)."""
    return dataclasses.field(default=default, compare=False, metadata={"transient": True})


def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


class _Encoder:
    def __init__(self) -> None:
        self.arrays: List[np.ndarray] = []

    def array(self, a: np.ndarray) -> int:
        a = np.asarray(a)
        if a.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"cannot serialise an array of dtype {a.dtype}")
        self.arrays.append(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")))
        return len(self.arrays) - 1

    def value(self, v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out = {"$type": type(v).__name__}
            for f in dataclasses.fields(v):
                if not f.metadata.get("transient"):
                    out[f.name] = self.value(getattr(v, f.name))
            return out
        if isinstance(v, np.ndarray):
            return {"$array": self.array(v)}
        if isinstance(v, (bytes, bytearray, memoryview)):
            return {"$bytes": self.array(np.frombuffer(bytes(v), np.uint8))}
        if isinstance(v, dict):
            return [[self.value(k), self.value(x)] for k, x in v.items()]
        if isinstance(v, (list, tuple)):
            return [self.value(x) for x in v]
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (int, np.integer)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return float(v)
        if v is None or isinstance(v, str):
            return v
        raise TypeError(f"cannot serialise a value of type {type(v).__name__}")


class _Decoder:
    def __init__(self, arrays: List[np.ndarray]) -> None:
        self.arrays = arrays

    def _array(self, v: Any, what: str) -> np.ndarray:
        if not isinstance(v, dict) or not isinstance(v.get(what), int) or not 0 <= v[what] < len(self.arrays):
            raise FormatError(f"expected an array reference, got {str(v)[:80]}")
        return self.arrays[v[what]]

    def value(self, v: Any, ty: Any) -> Any:
        origin, args = typing.get_origin(ty), typing.get_args(ty)
        if ty is Any:
            raise FormatError("untyped field in a serialised dataclass")
        if origin is typing.Union:
            if v is None and type(None) in args:
                return None
            options = [a for a in args if a is not type(None)]
            if len(options) == 1:
                return self.value(v, options[0])
            name = v.get("$type") if isinstance(v, dict) else None
            for a in options:
                if dataclasses.is_dataclass(a) and a.__name__ == name:
                    return self.value(v, a)
            for a in options:  # a union of plain types: the first that decodes
                try:
                    return self.value(v, a)
                except (FormatError, TypeError, ValueError):
                    continue
            raise FormatError(f"value {str(v)[:80]} matches none of {ty}")
        if dataclasses.is_dataclass(ty):
            if not isinstance(v, dict) or v.get("$type") != ty.__name__:
                raise FormatError(f"expected a {ty.__name__}, got {str(v)[:80]}")
            hints = _hints(ty)
            kwargs = {}
            for f in dataclasses.fields(ty):
                if f.metadata.get("transient"):
                    continue
                if f.name in v:
                    kwargs[f.name] = self.value(v[f.name], hints[f.name])
                elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise FormatError(f"{ty.__name__}: missing field {f.name!r}")
            obj = ty.__new__(ty)  # no __init__ / __post_init__: the stored values are final
            for f in dataclasses.fields(ty):
                if f.name in kwargs:
                    value = kwargs[f.name]
                elif f.default is not dataclasses.MISSING:
                    value = f.default
                else:
                    value = f.default_factory()  # type: ignore[misc]
                object.__setattr__(obj, f.name, value)
            return obj
        if ty is np.ndarray:
            return self._array(v, "$array")
        if ty is bytes:
            return self._array(v, "$bytes").tobytes()
        if origin in (list, List, typing.Sequence) or ty is list:
            if not isinstance(v, list):
                raise FormatError(f"expected a list, got {str(v)[:80]}")
            inner = args[0] if args else Any
            return [self.value(x, inner) for x in v]
        if origin in (tuple, Tuple) or ty is tuple:
            if not isinstance(v, list):
                raise FormatError(f"expected a tuple, got {str(v)[:80]}")
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(self.value(x, args[0]) for x in v)
            if len(args) != len(v):
                raise FormatError(f"expected a tuple of {len(args)}, got {len(v)} values")
            return tuple(self.value(x, a) for x, a in zip(v, args))
        if origin in (dict, Dict) or ty is dict:
            if not isinstance(v, list) or any(not isinstance(p, list) or len(p) != 2 for p in v):
                raise FormatError("expected a list of [key, value] pairs")
            kt, vt = args
            return {self.value(k, kt): self.value(x, vt) for k, x in v}
        if ty is bool:
            if not isinstance(v, bool):
                raise FormatError(f"expected a bool, got {v!r}")
            return v
        if ty is int:
            if not isinstance(v, int) or isinstance(v, bool):
                raise FormatError(f"expected an int, got {v!r}")
            return v
        if ty is float:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise FormatError(f"expected a number, got {v!r}")
            return float(v)
        if ty is str:
            if not isinstance(v, str):
                raise FormatError(f"expected a string, got {v!r}")
            return v
        if ty is type(None):
            if v is not None:
                raise FormatError(f"expected null, got {v!r}")
            return None
        raise FormatError(f"unsupported field type {ty}")


def dumps(obj: Any, magic: bytes, version: int) -> bytes:
    """Serialise the dataclass ``obj``. Raises TypeError for values it cannot store."""
    if len(magic) != 8:
        raise ValueError("magic must be 8 bytes")
    enc = _Encoder()
    root = enc.value(obj)
    table, offset = [], 0
    for a in enc.arrays:
        table.append({"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset, "nbytes": a.nbytes})
        offset += -(-a.nbytes // _ALIGN) * _ALIGN
    header = json.dumps({"root": root, "arrays": table}, separators=(",", ":")).encode()
    head = _PREFIX.pack(magic, version, len(header)) + header
    parts = [head, b"\0" * (-len(head) % _ALIGN)]
    for a in enc.arrays:
        data = a.tobytes()
        parts += [data, b"\0" * (-len(data) % _ALIGN)]
    return b"".join(parts)


def read_version(blob: bytes, magic: bytes) -> int:
    """The format version of a blob; FormatError if it does not start with ``magic``."""
    if len(blob) < _PREFIX.size or blob[:8] != magic:
        raise FormatError(f"not a {magic.decode(errors='replace')} blob")
    return _PREFIX.unpack_from(blob)[1]


def loads(blob: bytes, cls: Type[T], magic: bytes) -> T:
    """Decode a blob written by :func:`dumps` as an instance of dataclass ``cls``
    (whatever its version: check :func:`read_version` first). Raises FormatError."""
    blob = bytes(blob)
    read_version(blob, magic)
    _, _, n_header = _PREFIX.unpack_from(blob)
    end = _PREFIX.size + n_header
    if end > len(blob):
        raise FormatError("truncated header")
    try:
        header = json.loads(blob[_PREFIX.size:end].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"corrupt header: {exc}") from None
    start = end + (-end % _ALIGN)
    arrays = []
    for entry in header.get("arrays", []):
        try:
            dtype = np.dtype(str(entry["dtype"]))
            shape = tuple(int(d) for d in entry["shape"])
            offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"corrupt array table: {exc}") from None
        if dtype.kind not in _NUMERIC_KINDS or nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize \
                or offset < 0 or start + offset + nbytes > len(blob):
            raise FormatError(f"bad array entry {entry}")
        data = np.frombuffer(blob, dtype, count=nbytes // dtype.itemsize if dtype.itemsize else 0,
                             offset=start + offset)
        arrays.append(data.astype(dtype.newbyteorder("="), copy=True).reshape(shape))
    return _Decoder(arrays).value(header.get("root"), cls)
