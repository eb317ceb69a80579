#!/usr/bin/env python3
"""Bit-exactness of the dense kernels on ARMv5TE against the host, without hardware.

    python tools/qemu_bitexact.py [--cases 300] [--seed 1]

Builds ``c_runtime/tests/kernel_driver.c`` with the kernels twice: for the host
(gcc) and for ARMv5TE Linux (``arm-linux-gnueabi-gcc -mcpu=arm968e-s -marm -Os
-static``), run under ``qemu-arm -cpu arm946`` (an ARMv5TE model that traps
ARMv6-only instructions). Random dense-tile and dense-reduce configs (the
layouts of spinn_dense.h / spinn_rx.h, as tvm_spinn/program.py writes them)
and shuffled packet streams go through both; every packet sent must match.

The random values stay inside what the compiler proves for real layers (no
int32 block or int64 overflow: that would be undefined behaviour, not a
portability bug). Tools: ``apt-get install -y --no-install-recommends
gcc-arm-linux-gnueabi libc6-dev-armel-cross qemu-user``. Exit 0 when equal,
1 on a difference, 2 when a tool is missing.
"""
from __future__ import annotations

import argparse
import math
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "c_runtime" / "include"
DRIVER = ROOT / "c_runtime" / "tests" / "kernel_driver.c"
KERNEL_SOURCES = [ROOT / "c_runtime" / "kernels" / "dense_tile.c", ROOT / "c_runtime" / "kernels" / "dense_reduce.c"]

HOST_CC = ["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]
ARM_CC = ["arm-linux-gnueabi-gcc", "-std=c99", "-mcpu=arm968e-s", "-marm", "-Os", "-static",
          "-Wall", "-Wextra", "-Werror"]
QEMU = ["qemu-arm", "-cpu", "arm946"]
TOOLS = ("gcc", "arm-linux-gnueabi-gcc", "qemu-arm")
INSTALL_HINT = "apt-get install -y --no-install-recommends gcc-arm-linux-gnueabi libc6-dev-armel-cross qemu-user"

# spinn_dense.h / spinn_fixed.h constants
KIND_TILE, KIND_REDUCE = 0x5D01, 0x5D02
FINAL, PARTIAL = 0, 1
MAX_SLOTS = 16
M32 = 0xFFFFFFFF

Case = Tuple[int, List[int], List[Tuple[int, int]]]  # driver kind, config words, packets


def missing_tools() -> List[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _bits(n: int) -> int:
    """Shift that makes room for indices 0..n-1 (log2 of the next power of two)."""
    return max(n - 1, 0).bit_length()


def _pack16(values: List[int]) -> List[int]:
    if len(values) % 2:
        values = values + [0]
    return [(values[i] & 0xFFFF) | ((values[i + 1] & 0xFFFF) << 16) for i in range(0, len(values), 2)]


def _tanh_table() -> List[int]:
    return _pack16([round(32767 * math.tanh(i / 64)) for i in range(513)])


def _row_params(rng: random.Random, rows: int, max_mult: int) -> List[int]:
    words = []
    for _ in range(rows):
        bias = rng.randint(-(1 << 40), 1 << 40) & ((1 << 64) - 1)
        words += [bias & M32, bias >> 32, rng.randint(1, max_mult), rng.randint(0, 50)]
    return words


def _source_block(shift: int) -> int:
    """Keys a source reserves: MAX_SLOTS slots of 2^shift indices (power of two)."""
    return MAX_SLOTS << shift


def _rounds(rng: random.Random, n_slots: int, per_slot, rounds: int) -> List[Tuple[int, int]]:
    """Rounds of complete samples in random slots, shuffled within a round (a
    slot is reused only after it was computed), plus packets that match nothing."""
    packets: List[Tuple[int, int]] = []
    for _ in range(rounds):
        batch = [p for slot in rng.sample(range(n_slots), rng.randint(1, n_slots)) for p in per_slot(slot)]
        batch += [(0xFF000000 | rng.getrandbits(24), rng.getrandbits(32)) for _ in range(rng.randint(0, 3))]
        rng.shuffle(batch)
        packets += batch
    return packets


def random_tile(rng: random.Random, rounds: int = 2) -> Case:
    mode = rng.choice((FINAL, PARTIAL))
    rows, cols = rng.randint(1, 24), rng.randint(1, 40)
    block_words = rng.choice((1, 1, 2, 4, 8, 16))
    # An int32 block of 2*block_words products must not overflow for any int16 input.
    wmax = 32767 if block_words == 1 else min(32767, (1 << 31) // (2 * block_words * 32768) - 1)
    act, n_slots = rng.randint(0, 3), rng.randint(1, MAX_SLOTS)
    bound = cols * 32768 * wmax  # |row dot product|
    partial_shift = min(32, max(0, (bound.bit_length() + 1) - 31) + rng.randint(0, 3))
    out_shift = _bits(rows if mode == PARTIAL else (rows + 1) // 2)
    out_key = rng.getrandbits(8) << 24

    # Sources: contiguous producers covering [c0 - left, c0 + cols + right), keyed per pair.
    left, right = rng.randint(0, 7), rng.randint(0, 7)
    cuts = sorted(rng.sample(range(1, left + cols + right), min(rng.randint(0, 2), left + cols + right - 1)))
    bounds = [0] + cuts + [left + cols + right]
    rx, sources = [], []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        shift = _bits((b - a + 1) // 2)
        base = (i + 1) << 20
        rx += [base, M32 & ~(_source_block(shift) - 1), shift, (a - left) & M32, b - a]
        sources.append((base, shift, b - a))

    header = [KIND_TILE, mode, rows, cols, 2 * block_words, out_key, out_shift, act, partial_shift, n_slots,
              len(sources)]
    weights = []
    for _ in range(rows):
        weights += _pack16([rng.randint(-wmax, wmax) for _ in range(cols)])
    cfg = header + rx + weights
    if mode == FINAL:
        cfg += _row_params(rng, rows, (1 << 15) - 1) + (_tanh_table() if act >= 2 else [])

    def per_slot(slot):
        return [(base | slot << shift | j, rng.getrandbits(32))
                for base, shift, n in sources for j in range((n + 1) // 2)]

    return 1, cfg, _rounds(rng, n_slots, per_slot, rounds)


def random_reduce(rng: random.Random, rounds: int = 2) -> Case:
    rows, n_sources = rng.randint(1, 24), rng.randint(1, 4)
    act, n_slots = rng.randint(0, 3), rng.randint(1, MAX_SLOTS)
    shift = _bits(rows)
    rx = []
    for i in range(n_sources):
        rx += [(i + 1) << 20, M32 & ~(_source_block(shift) - 1), shift, 0, rows]
    header = [KIND_REDUCE, rows, n_sources, rng.getrandbits(8) << 24, _bits((rows + 1) // 2), act,
              rng.randint(0, 16), n_slots, n_sources]
    # sum < 2^33, << 16, + bias < 2^41: times a multiplier < 2^12 stays below 2^62.
    cfg = header + rx + _row_params(rng, rows, (1 << 12) - 1) + (_tanh_table() if act >= 2 else [])

    def per_slot(slot):
        return [((i + 1) << 20 | slot << shift | r, rng.getrandbits(32))
                for i in range(n_sources) for r in range(rows)]

    return 2, cfg, _rounds(rng, n_slots, per_slot, rounds)


def write_cases(path: Path, cases: Sequence[Case]) -> None:
    lines = []
    for kind, cfg, packets in cases:
        lines.append(f"{kind:x} {len(cfg):x}")
        lines.append(" ".join(f"{w & M32:x}" for w in cfg))
        lines.append(f"{len(packets):x}")
        lines.append(" ".join(f"{k & M32:x} {p & M32:x}" for k, p in packets))
    path.write_text("\n".join(lines) + "\n")


def build(workdir: Path) -> Tuple[Path, Path]:
    """The driver for the host and for ARMv5TE; raises CalledProcessError with the compiler output."""
    srcs = [str(DRIVER)] + [str(s) for s in KERNEL_SOURCES]
    host, arm = workdir / "driver_host", workdir / "driver_arm"
    for cc, out in ((HOST_CC, host), (ARM_CC, arm)):
        subprocess.run(cc + [f"-I{INCLUDE}", *srcs, "-o", str(out)], check=True, capture_output=True, text=True)
    return host, arm


def compare(n_cases: int = 300, seed: int = 1) -> dict:
    """Run n_cases random cases on both builds; a summary with the first difference, if any."""
    rng = random.Random(seed)
    cases = [random_tile(rng) if i % 3 else random_reduce(rng) for i in range(n_cases)]
    with tempfile.TemporaryDirectory(prefix="qemu_bitexact_") as tmp:
        work = Path(tmp)
        host, arm = build(work)
        cases_file = work / "cases.txt"
        write_cases(cases_file, cases)
        out_host = subprocess.run([str(host), str(cases_file)], check=True, capture_output=True, text=True).stdout
        out_arm = subprocess.run(QEMU + [str(arm), str(cases_file)], check=True, capture_output=True,
                                 text=True).stdout
    h, a = out_host.splitlines(), out_arm.splitlines()
    diff: Optional[str] = None
    if h != a:
        i = next((i for i, (x, y) in enumerate(zip(h, a)) if x != y), min(len(h), len(a)))
        case = next((l for l in reversed(h[: i + 1]) if l.startswith("case ")), "?")
        diff = f"line {i} ({case}): host {h[i] if i < len(h) else '<end>'!r} arm {a[i] if i < len(a) else '<end>'!r}"
    return {
        "equal": diff is None,
        "cases": n_cases,
        "init_failures": sum(1 for l in h if l.startswith("case ") and not l.endswith("init=0")),
        "computes": sum(1 for l in h if l.startswith("slot ")),
        "packets_sent": sum(1 for l in h if len(l) == 17 and l[8] == " "),
        "first_difference": diff,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"qemu_bitexact: {', '.join(missing)} not found; install with:\n    {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        r = compare(args.cases, args.seed)
    except subprocess.CalledProcessError as e:
        print(f"qemu_bitexact: {' '.join(map(str, e.cmd[:3]))}... failed:\n{e.stderr}", file=sys.stderr)
        return 1
    print(f"{r['cases']} cases, {r['computes']} computes, {r['packets_sent']} packets sent, "
          f"{r['init_failures']} configs rejected: "
          + ("host and ARMv5TE (qemu arm946) bit-identical" if r["equal"] else f"DIFFER at {r['first_difference']}"))
    return 0 if r["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
