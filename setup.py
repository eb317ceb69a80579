"""Build of tvm_spinn's native libraries (metadata lives in pyproject.toml).

`pip install -e .` runs CMake (CMakeLists.txt) and writes
libtvm_spinn_runtime.so and libtvm_spinn_emu.so into tvm_spinn/_lib/ of the
source tree; a regular (wheel) install writes them into the wheel instead.
CMake's build tree is build/cmake-pip (gitignored). To rebuild in place by hand:
`cmake -S . -B build/cmake && cmake --build build/cmake`, or from Python
tvm_spinn._native.build_native().
Set TVM_SPINN_UBSAN=1 to also build libtvm_spinn_emu_ubsan.so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_namespace_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _cmake() -> str:
    """The cmake binary: the `cmake` wheel of the build environment, else PATH."""
    try:
        import cmake  # the PyPI package, listed in build-system.requires

        return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    except ImportError:
        found = shutil.which("cmake")
        if found is None:
            raise RuntimeError("cmake not found: pip install cmake") from None
        return found


class CMakeBuild(build_ext):
    """Replaces the compiler-driven build_ext by one CMake configure + build."""

    def run(self) -> None:
        # editable_mode is set by `pip install -e` (PEP 660); inplace by `build_ext -i`.
        inplace = self.inplace or getattr(self, "editable_mode", False)
        lib_dir = (ROOT if inplace else Path(self.build_lib).resolve()) / "tvm_spinn" / "_lib"
        lib_dir.mkdir(parents=True, exist_ok=True)
        if not inplace:  # build/lib* persists: drop libraries of an earlier configuration
            for old in lib_dir.glob("*.so"):
                old.unlink()
        # pip builds in an isolated env whose cmake binary is deleted afterwards and
        # gets baked into the generated Makefiles: keep these trees apart from
        # build/cmake, the tree for manual builds and tvm_spinn._native.build_native.
        build_dir = ROOT / "build" / ("cmake-pip" if inplace else "cmake-wheel")
        cmake = _cmake()
        configure = [
            cmake, "-S", str(ROOT), "-B", str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            # CMake derives tvm_ffi_DIR from this interpreter (the build env's).
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DTVM_SPINN_LIB_DIR={lib_dir}",
        ]
        ubsan = os.environ.get("TVM_SPINN_UBSAN", "") not in ("", "0", "OFF", "off")
        configure.append(f"-DTVM_SPINN_UBSAN={'ON' if ubsan else 'OFF'}")
        subprocess.run(configure, check=True)
        subprocess.run(
            [cmake, "--build", str(build_dir), "-j", str(os.cpu_count() or 2)], check=True
        )
        self._built = sorted(str(p) for p in lib_dir.glob("*.so"))
        if not any(p.endswith("libtvm_spinn_runtime.so") for p in self._built):
            raise RuntimeError(f"CMake did not produce libtvm_spinn_runtime.so in {lib_dir}")

    def get_outputs(self) -> list[str]:
        return list(getattr(self, "_built", []))

    def get_output_mapping(self) -> dict[str, str]:
        return {}


setup(
    # Namespace discovery: also finds subpackages that lack an __init__.py.
    # _lib is filled by CMakeBuild (not package_data, which would copy stale
    # libraries from the source tree into a wheel).
    packages=find_namespace_packages(
        include=["tvm_spinn", "tvm_spinn.*"], exclude=["*.__pycache__", "tvm_spinn._lib"]
    ),
    # One placeholder extension makes setuptools run build_ext and tag the wheel
    # as platform specific; CMakeBuild builds everything.
    ext_modules=[Extension("tvm_spinn._lib.tvm_spinn_runtime", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
