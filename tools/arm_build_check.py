#!/usr/bin/env python3
"""The CI's ARM build check of the C kernels and their spin1 bindings.

    python tools/arm_build_check.py [--json out.json]

For every kernel ``c_runtime/kernels/<name>.c``:

* compile it for the ARM968 (``arm-none-eabi-gcc -mcpu=arm968e-s -marm
  -std=c99 -Ofast -ffreestanding -fno-builtin -Wall -Wextra -Werror``, the
  .aplx build's optimisation: its sizes are the real build's);
* fail on undefined symbols that mean soft float (``__aeabi_f*``,
  ``__aeabi_d*``, ``*sf*``/``*df*`` libgcc helpers) or division
  (``__aeabi_*div*``, ``__aeabi_*mod*``, ``__divsi3``...); report any other
  undefined symbol (a kernel should need none);
* compile its binding ``c_runtime/spin1/<name>_main.c`` with the same flags
  against ``spin1_api_decls.h`` (or, when ``SPINN_DIRS`` is set, also against
  the real SDK headers with ``-DSPINN_REAL_SDK``);
* report text+data of the kernel and of kernel+binding, and check the sum
  fits the ITCM left by the spin1 runtime (``tvm_spinn/tiling/resources.py``).

Also compiles the kernels, the bindings and the emulator for the host with
``gcc -std=c99 -O2 -Wall -Wextra -Werror -pedantic``. Prints a table and exits
1 on any failure, 2 when a compiler is missing.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "c_runtime" / "include"
KERNELS = ROOT / "c_runtime" / "kernels"
SPIN1 = ROOT / "c_runtime" / "spin1"
EMULATOR = ROOT / "c_runtime" / "emulator"

ARM = "arm-none-eabi-"
ARM_FLAGS = ["-mcpu=arm968e-s", "-marm", "-std=c99", "-Ofast", "-ffreestanding", "-fno-builtin",
             "-Wall", "-Wextra", "-Werror"]
HOST_FLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"]
INSTALL_HINT = "apt-get install -y --no-install-recommends gcc-arm-none-eabi"

# Helpers gcc calls for float or division: the ARM968 has neither FPU nor divider.
FORBIDDEN = re.compile(
    r"^__aeabi_[fd]"            # soft-float arithmetic, comparisons, conversions from float
    r"|^__aeabi_\w*2[fd]"       # conversions to float (__aeabi_i2d, __aeabi_l2f, ...)
    r"|^__aeabi_\w*(div|mod)"   # __aeabi_idiv, __aeabi_uidivmod, __aeabi_ldivmod, ...
    # libgcc's own names: __addsf3, __floatsidf, __fixdfsi, __extendsfdf2, ...
    r"|^__(add|sub|mul|div|neg|extend|trunc|fix|float|cmp|eq|ne|gt|ge|lt|le|unord|pow)\w*[sdt]f"
    r"|^__u?(div|mod|divmod)[sdt]i\d$"  # __divsi3, __umodsi3, __udivmoddi4, ...
)
# What a binding may leave undefined besides its kernel's functions.
SDK_API = re.compile(r"^(spin1_|sark_|rt_error$|simulation_|data_specification_)")


def _resources():
    """tvm_spinn/tiling/resources.py loaded by path: the package's __init__ imports TVM."""
    path = ROOT / "tvm_spinn" / "tiling" / "resources.py"
    spec = importlib.util.spec_from_file_location("_tvm_spinn_resources", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def itcm_budget() -> int:
    """ITCM bytes a kernel and its binding may take beside the spin1 runtime."""
    res = _resources()
    return int(res.ITCM_BYTES - res.ITCM_RUNTIME_BYTES)


def app_name_hash(name: str) -> str:
    """front-end-common's APPLICATION_NAME_HASH: md5 of the binary's name, 8 hex digits
    (local.mk, and simulation_utilities.get_simulation_header_array on the host)."""
    return "0x" + hashlib.md5(name.encode()).hexdigest()[:8]


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, cwd=ROOT)


def _compile(cc: str, flags: List[str], src: Path, out: Optional[Path], extra=()) -> Optional[str]:
    """Compile src to out (or syntax-check when out is None); the error text or None."""
    cmd = [cc, *flags, f"-I{INCLUDE}", *extra, "-c", str(src)]
    cmd += ["-o", str(out)] if out is not None else ["-fsyntax-only"]
    proc = _run(cmd)
    return None if proc.returncode == 0 else (proc.stderr or proc.stdout).strip()


def _undefined(obj: Path) -> List[str]:
    proc = _run([ARM + "nm", "-u", str(obj)])
    return sorted(line.split()[-1] for line in proc.stdout.splitlines() if line.strip())


def _defined(obj: Path) -> List[str]:
    proc = _run([ARM + "nm", "--defined-only", "-g", str(obj)])
    return sorted(line.split()[-1] for line in proc.stdout.splitlines() if line.strip())


def _size(obj: Path) -> Dict[str, int]:
    """text and data bytes (Berkeley format: text includes rodata)."""
    proc = _run([ARM + "size", str(obj)])
    text, data, bss = (int(v) for v in proc.stdout.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "size": text + data}


def missing_tools() -> List[str]:
    return [t for t in (ARM + "gcc", ARM + "nm", ARM + "size") if shutil.which(t) is None]


def check(workdir: Path) -> dict:
    """Run every check; the report as a dict (``ok`` says whether all passed)."""
    budget = itcm_budget()
    failures: List[str] = []
    notes: List[str] = []
    kernels: Dict[str, dict] = {}
    real_sdk = os.environ.get("SPINN_DIRS")
    real_inc = Path(real_sdk) / "include" if real_sdk else None
    if real_inc is not None and not (real_inc / "spin1_api.h").is_file():
        notes.append(f"SPINN_DIRS={real_sdk} has no include/spin1_api.h: real-SDK build skipped")
        real_inc = None

    for src in sorted(KERNELS.glob("*.c")):
        name = src.stem
        k: dict = {"forbidden": [], "other_undefined": [], "errors": []}
        kernels[name] = k
        obj = workdir / f"{name}.o"
        err = _compile(ARM + "gcc", ARM_FLAGS, src, obj)
        if err:
            k["errors"].append(f"ARM compile: {err}")
            failures.append(f"{name}: ARM compile failed")
            continue
        undefined = _undefined(obj)
        k["forbidden"] = [s for s in undefined if FORBIDDEN.search(s)]
        k["other_undefined"] = [s for s in undefined if not FORBIDDEN.search(s)]
        if k["forbidden"]:
            failures.append(f"{name}: float/division helpers {k['forbidden']}")
        if k["other_undefined"]:
            notes.append(f"{name}: undefined symbols {k['other_undefined']} (a kernel should need none)")
        k.update(_size(obj))
        k["total"] = k["size"]

        binding = SPIN1 / f"{name}_main.c"
        k["binding"] = None
        if binding.is_file():
            bobj = workdir / f"{name}_main.o"
            defines = [f"-I{SPIN1}", f"-DAPPLICATION_NAME_HASH={app_name_hash(name)}"]
            err = _compile(ARM + "gcc", ARM_FLAGS, binding, bobj, defines)
            if err:
                k["errors"].append(f"binding ARM compile: {err}")
                failures.append(f"{name}: binding compile failed")
            else:
                b_undef = _undefined(bobj)
                ours = set(_defined(obj))
                b = _size(bobj)
                b["forbidden"] = [s for s in b_undef if FORBIDDEN.search(s)]
                b["other_undefined"] = [s for s in b_undef
                                        if not FORBIDDEN.search(s) and s not in ours and not SDK_API.match(s)]
                k["binding"] = b
                k["total"] = k["size"] + b["size"]
                if b["forbidden"]:
                    failures.append(f"{name}_main: float/division helpers {b['forbidden']}")
                if b["other_undefined"]:
                    failures.append(f"{name}_main: unexpected undefined symbols {b['other_undefined']}")
            if real_inc is not None:
                # The SDK headers use GNU asm: gnu99 instead of c99.
                flags = [f if f != "-std=c99" else "-std=gnu99" for f in ARM_FLAGS]
                err = _compile(ARM + "gcc", flags, binding, workdir / f"{name}_real.o",
                               defines + ["-DSPINN_REAL_SDK", f"-I{real_inc}"])
                k["real_sdk"] = err is None
                if err:
                    k["errors"].append(f"binding real-SDK compile: {err}")
                    failures.append(f"{name}: binding does not compile against SPINN_DIRS")
        else:
            notes.append(f"{name}: no spin1 binding ({binding.relative_to(ROOT)})")
        k["within_budget"] = k["total"] <= budget
        if not k["within_budget"]:
            failures.append(f"{name}: {k['total']} bytes exceed the ITCM budget of {budget}")

    host: Dict[str, Optional[str]] = {}
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        notes.append("no host C compiler: host build skipped")
    else:
        for src in sorted(KERNELS.glob("*.c")) + sorted(EMULATOR.glob("*.c")):
            host[src.name] = _compile(cc, HOST_FLAGS, src, workdir / f"host_{src.stem}.o")
        for src in sorted(SPIN1.glob("*_main.c")):
            name = src.stem[: -len("_main")]
            host[src.name] = _compile(cc, HOST_FLAGS, src, None,
                                      [f"-I{SPIN1}", f"-DAPPLICATION_NAME_HASH={app_name_hash(name)}"])
        for f, err in host.items():
            if err:
                failures.append(f"host build of {f} failed:\n{err}")

    if not kernels:
        failures.append(f"no kernels found in {KERNELS}")
    return {"ok": not failures, "itcm_budget": budget, "kernels": kernels,
            "host": {f: err is None for f, err in host.items()}, "failures": failures, "notes": notes}


def print_table(report: dict) -> None:
    rows = [("kernel", "text", "data", "binding", "total", "budget", "undefined", "status")]
    for name, k in report["kernels"].items():
        b = k.get("binding")
        bad = k["errors"] or k["forbidden"] or not k.get("within_budget", False) \
            or (b is not None and (b["forbidden"] or b["other_undefined"]))
        rows.append((name, str(k.get("text", "-")), str(k.get("data", "-")),
                     str(b["size"]) if b else "-", str(k.get("total", "-")),
                     str(report["itcm_budget"]),
                     ",".join(k["forbidden"] + k["other_undefined"]) or "none",
                     "FAIL" if bad else "ok"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    if report["host"]:
        print("host build (gcc -std=c99 -pedantic):",
              ", ".join(f"{f} {'ok' if ok else 'FAIL'}" for f, ok in report["host"].items()))
    real = {n: k["real_sdk"] for n, k in report["kernels"].items() if "real_sdk" in k}
    if real:
        print("bindings against SPINN_DIRS (-DSPINN_REAL_SDK):",
              ", ".join(f"{n} {'ok' if ok else 'FAIL'}" for n, ok in real.items()))
    for n in report["notes"]:
        print("note:", n)
    for f in report["failures"]:
        print("FAIL:", f)
    for name, k in report["kernels"].items():
        for e in k["errors"]:
            print(f"--- {name}: {e}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"arm_build_check: {', '.join(missing)} not found on PATH; install the ARM "
              f"toolchain with:\n    {INSTALL_HINT}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="arm_build_check_") as tmp:
        report = check(Path(tmp))
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("ARM build check:", "passed" if report["ok"] else "FAILED")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
