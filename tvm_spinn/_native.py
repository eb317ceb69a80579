"""Loading the native parts of tvm_spinn (built by CMake, see CMakeLists.txt).

- ``libtvm_spinn_runtime.so``: the TVM runtime module of kind ``"spinnaker"``
  (``codegen/spinnaker_module.cc``). Loading it registers the global functions
  ``tvm_spinn.SpinnakerModuleCreate`` and ``ffi.Module.load_from_bytes.spinnaker``.
- ``libtvm_spinn_emu.so`` (and ``libtvm_spinn_emu_ubsan.so``): the C kernels and
  the board emulator compiled for the host, used through :mod:`ctypes`.

All libraries live in ``tvm_spinn/_lib/`` and are loaded at most once per process.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import tvm_ffi

__all__ = [
    "LIB_DIR",
    "NativeLibraryError",
    "build_native",
    "emulator_library",
    "emulator_library_path",
    "load_runtime_library",
    "make_module",
]

LIB_DIR: Path = Path(__file__).resolve().parent / "_lib"
"""Directory holding the built shared libraries."""

_RUNTIME_LIB = "libtvm_spinn_runtime.so"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the checkout, in an editable install
_BUILD_DIR = _SOURCE_ROOT / "build" / "cmake"

_lock = threading.RLock()
_runtime_module: tvm_ffi.Module | None = None  # kept alive: it owns the registered globals
_emu_libs: dict[bool, ctypes.CDLL] = {}


class NativeLibraryError(RuntimeError):
    """A native library of tvm_spinn is missing or cannot be built/loaded."""


def _missing(path: Path) -> NativeLibraryError:
    return NativeLibraryError(
        f"{path} not found: the native part of tvm_spinn is not built. "
        "Run `pip install -e .` in the tvm_spinn checkout."
    )


def load_runtime_library() -> tvm_ffi.Module:
    """Load ``libtvm_spinn_runtime.so`` (once per process) and return it.

    Loading registers the ``"spinnaker"`` module kind's constructor and its
    ``load_from_bytes`` loader, which ``tvm.runtime.load_module`` needs to load
    an exported library containing spinnaker modules.
    """
    global _runtime_module
    with _lock:
        if _runtime_module is None:
            path = LIB_DIR / _RUNTIME_LIB
            if not path.exists():
                raise _missing(path)
            _runtime_module = tvm_ffi.load_module(str(path))
        return _runtime_module


def make_module(symbol: str, payload: bytes) -> tvm_ffi.Module:
    """Create a runtime module of kind ``"spinnaker"``.

    Args:
        symbol: the Relax global symbol the module implements (the name used in
            ``R.call_dps_packed``).
        payload: opaque bytes handed to the executor factory
            ``tvm_spinn.runtime.create_executor(symbol, payload, instance_id)``.

    Returns:
        The module (a ``tvm.runtime.Module`` when ``tvm`` is imported). Put it
        in the IRModule attribute ``external_mods`` (what ``RunCodegen`` does)
        so that ``tvm.compile`` imports it into the executable.
    """
    load_runtime_library()
    create = tvm_ffi.get_global_func("tvm_spinn.SpinnakerModuleCreate")
    return create(str(symbol), bytes(payload))


def emulator_library_path(ubsan: bool = False) -> Path:
    """Path of the emulator library (``libtvm_spinn_emu[_ubsan].so``)."""
    return LIB_DIR / ("libtvm_spinn_emu_ubsan.so" if ubsan else "libtvm_spinn_emu.so")


def _emu_sources() -> list[Path]:
    root = _SOURCE_ROOT / "c_runtime"
    return [
        p
        for pattern in ("kernels/*.c", "emulator/*.c", "include/**/*.h")
        for p in root.glob(pattern)
    ]


def _is_stale(lib: Path) -> bool:
    """True if the library is missing or older than a C source (editable checkout only)."""
    if not lib.exists():
        return True
    if os.environ.get("TVM_SPINN_NO_AUTOBUILD"):
        return False
    mtime = lib.stat().st_mtime
    return any(src.stat().st_mtime > mtime for src in _emu_sources())


def _cmake() -> str:
    """The cmake binary: from the `cmake` wheel if installed, else from PATH."""
    try:
        import cmake  # the PyPI package (a build requirement of tvm_spinn)

        return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    except ImportError:
        found = shutil.which("cmake")
        if found is None:
            raise NativeLibraryError("cmake not found: pip install cmake") from None
        return found


def build_native(ubsan: bool = False) -> None:
    """(Re)build the native libraries with CMake into ``build/cmake``.

    Only possible from a source checkout (editable install). With
    ``ubsan=True`` the UBSan variant of the emulator is built as well.
    Output goes to :data:`LIB_DIR`.
    """
    if not (_SOURCE_ROOT / "CMakeLists.txt").exists():
        raise NativeLibraryError(
            f"cannot build the native libraries: no CMakeLists.txt in {_SOURCE_ROOT} "
            "(not a source checkout). Reinstall tvm_spinn."
        )
    cmake = _cmake()
    configure = [
        cmake, "-S", str(_SOURCE_ROOT), "-B", str(_BUILD_DIR),
        f"-DPython_EXECUTABLE={sys.executable}",
        f"-DTVM_SPINN_LIB_DIR={LIB_DIR}",
    ]
    if ubsan:
        configure.append("-DTVM_SPINN_UBSAN=ON")
    _BUILD_DIR.mkdir(parents=True, exist_ok=True)
    # Serialise concurrent builds (e.g. parallel test processes) on one build tree.
    with open(_BUILD_DIR.parent / "cmake.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        for cmd in (configure, [cmake, "--build", str(_BUILD_DIR), "-j", str(os.cpu_count() or 2)]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise NativeLibraryError(
                    f"command failed: {' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
                )


def emulator_library(ubsan: bool = False) -> ctypes.CDLL:
    """Load the host build of the C kernels and emulator (once per process per variant).

    In a source checkout the library is (re)built with CMake when it is missing
    or older than a file in ``c_runtime/`` (set ``TVM_SPINN_NO_AUTOBUILD=1`` to
    disable the rebuild of existing libraries). The UBSan variant aborts the
    process on undefined behaviour, so run it in a subprocess.
    """
    with _lock:
        lib = _emu_libs.get(ubsan)
        if lib is not None:
            return lib
        path = emulator_library_path(ubsan)
        if _is_stale(path) and (_SOURCE_ROOT / "CMakeLists.txt").exists():
            build_native(ubsan=ubsan)
        if not path.exists():
            if not _emu_sources():
                raise NativeLibraryError(f"{path} not built: no C sources in c_runtime/")
            raise _missing(path)
        lib = ctypes.CDLL(str(path))
        _emu_libs[ubsan] = lib
        return lib
