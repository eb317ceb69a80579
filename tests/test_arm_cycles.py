"""The cycle measurement tool (tools/arm_cycles.py): its ARM968E-S timing rules on known
instruction sequences, that an instruction the table does not cover stops it, and its
quick run under qemu-arm: every kernel kind gets positive, finite figures and the dense
MAC cost is in a plausible band."""
import importlib.util
import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "arm_cycles.py"


def _tool():
    spec = importlib.util.spec_from_file_location("arm_cycles", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ARM encodings (arm-linux-gnueabi-as -march=armv5te)
LDR_R0 = 0xE5910000  # ldr r0, [r1]
ADD_R2_R0 = 0xE0802003  # add r2, r0, r3
LDRB_R0 = 0xE5D10000  # ldrb r0, [r1]
MOV_R4_R5 = 0xE1A04005  # mov r4, r5
LDRH_R0 = 0xE1D100B0  # ldrh r0, [r1]
MUL_R6 = 0xE0060897  # mul r6, r7, r8
ADD_R4_R0 = 0xE0804005  # add r4, r0, r5
SMLABB_R0 = 0xE1000281  # smlabb r0, r1, r2, r0
SMLALBB = 0xE1454382  # smlalbb r4, r5, r2, r3
LDR_SCALED = 0xE7921103  # ldr r1, [r2, r3, lsl #2]
POP_PC = 0xE8BD8070  # pop {r4, r5, r6, pc}
PUSH_2 = 0xE92D4010  # push {r4, lr}
BNE = 0x1AFFFFFE
BEQ = 0x0AFFFFFE
BX_LR = 0xE12FFF1E
SVC = 0xEF000000
QADD = 0xE1020051
MCR = 0xEE070F90
UMULL = 0xE0810392  # umull r0, r1, r2, r3
ADD_REGSHIFT = 0xE0810312  # add r0, r1, r2, lsl r3
MOV_PC_LR = 0xE1A0F00E
CLZ = 0xE16F0F11
Z = 0b0100  # NZCV with Z set


def test_timing_rules_on_known_sequences():
    t = _tool()
    cost = t.cost_sequence
    assert cost([LDR_R0, ADD_R2_R0]) == [1, 2]  # LDR, used by the next instruction: +1
    assert cost([LDRB_R0, ADD_R2_R0]) == [1, 3]  # LDRB used next: +2
    assert cost([LDRB_R0, MOV_R4_R5, ADD_R2_R0]) == [1, 1, 2]  # ... by the one after: +1
    assert cost([LDRH_R0, MUL_R6, ADD_R4_R0]) == [1, 2, 1]  # a multi-cycle instruction between: none
    assert cost([SMLABB_R0, ADD_R2_R0]) == [1, 2]  # SMLAxy 1, result one cycle later
    assert cost([SMLALBB]) == [2] and cost([ADD_REGSHIFT]) == [2] and cost([CLZ]) == [1]
    assert cost([UMULL, ADD_REGSHIFT]) == [3, 3]  # UMULL 3, result (r1) one cycle later
    assert cost([LDR_SCALED, POP_PC, PUSH_2, BX_LR, MOV_PC_LR]) == [2, 8, 2, 3, 4]
    assert cost([BNE], flags=Z) == [1] and cost([BEQ], flags=Z) == [3]  # not taken / taken


def test_uncovered_instructions_stop_the_tool(monkeypatch):
    t = _tool()
    for word in (SVC, QADD, MCR):
        with pytest.raises(t.CostError):
            t.decode(word)
    # a class missing from the table is an error, never a cost of 0
    monkeypatch.delitem(t.TIMING, "smulxy")
    with pytest.raises(t.CostError):
        t.decode(SMLABB_R0)


def test_every_rule_cites_its_source():
    t = _tool()
    for name, rule in t.TIMING.items():
        assert rule.source and rule.what and rule.cycles >= 0 and rule.latency >= 0, name


needs_tools = pytest.mark.skipif(
    any(shutil.which(x) is None for x in ("arm-linux-gnueabi-gcc", "arm-linux-gnueabi-objdump",
                                         "arm-linux-gnueabi-nm", "qemu-arm")),
    reason="ARM toolchain or qemu-arm missing (apt-get install -y --no-install-recommends "
           "gcc-arm-linux-gnueabi libc6-dev-armel-cross qemu-user)")


@needs_tools
def test_quick_run_gives_plausible_figures(tmp_path):
    out = tmp_path / "cycles.json"
    proc = subprocess.run([sys.executable, str(TOOL), "--quick", "--json", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    kinds = report["kinds"]
    assert set(kinds) == set(_tool().KINDS)

    def positive(v):
        return v is not None and math.isfinite(v) and v > 0

    for name, k in kinds.items():
        per = k["cycles_per"]
        for what in ("output", "packet_in", "packet_in_without_event", "packet_out", "compute_event"):
            assert positive(per[what]), (name, what, per[what])
        assert positive(k["instructions_per"]["packet_in"]) and positive(k["instructions_per"]["compute_event"])
        assert k["counts"]["packets_in"] > 0 and k["counts"]["compute_events"] > 0, name
        if name.startswith(("dense_tile", "conv_tile")):  # the kernels that count MACs
            assert positive(per["mac"]) and per["mac_all_in"] > per["mac"], name
    for name in ("dense_tile_i32", "dense_tile_i64"):
        assert 2 <= kinds[name]["cycles_per"]["mac"] <= 20, kinds[name]["cycles_per"]
    # a depthwise 3x3 reuses nothing across channels: dearer per MAC than the dense conv
    assert kinds["conv_tile_depthwise"]["cycles_per"]["mac"] > kinds["conv_tile"]["cycles_per"]["mac"]


@needs_tools
def test_a_stream_of_packets_shares_its_user_events(tmp_path):
    """--burst 16: the FIQs of 16 packets come before the user event the first raises, and
    the drain takes all 16 in that event: the same work, a sixteenth of the events, and
    cheaper packets in, the FIQ's and the drain's part of an event shared too."""
    reports = {}
    for burst in (1, 16):
        out = tmp_path / f"b{burst}.json"
        proc = subprocess.run([sys.executable, str(TOOL), "--quick", "--burst", str(burst), "--json", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        reports[burst] = json.loads(out.read_text())["kinds"]
    for name, one in reports[1].items():
        many = reports[16][name]
        assert many["counts"]["packets_in"] == one["counts"]["packets_in"] == one["counts"]["user_events"]
        assert many["counts"]["macs"] == one["counts"]["macs"] and many["counts"]["outputs"] == one["counts"]["outputs"]
        assert 16 * many["counts"]["user_events"] <= one["counts"]["user_events"] + 16 * many["counts"]["compute_events"]
        by1, by16 = one["cycles_per_packet_in_by_phase"], many["cycles_per_packet_in_by_phase"]
        assert by16["event"] < by1["event"] / 8 and by16["drain"] < by1["drain"] and by16["fiq"] < by1["fiq"], name
    proc = subprocess.run([sys.executable, str(TOOL), "--quick", "--burst", "300"], capture_output=True, text=True)
    assert proc.returncode == 1 and "--burst 300: from 1 to 64" in proc.stderr


@needs_tools
def test_the_cycle_model_agrees_with_fresh_traces_within_15_percent(tmp_path):
    """tiling/cycle_calibration.json (fitted by tools/calibrate_cycles.py) against traces of
    tiles the fit did not see: a kernel change without a recalibration fails here."""
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "calibrate_cycles.py"), "--check", "--json",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    assert {r["kind"] for r in rows} == set(_tool().KINDS)
    # each tile with a user event a packet and as a stream (the drain taking 16 an event)
    assert {r["kind"] for r in rows if r["shape"].endswith(", 16 a user event")} == set(_tool().KINDS)
    assert all(abs(r["error"]) <= 0.15 and abs(r["compute_error"]) <= 0.15 for r in rows), rows


@needs_tools
def test_a_tile_takes_interleaved_producers_on_a_rows_path(monkeypatch):
    """Producers that send at once reach a tile with their packets interleaved. Each receive
    entry keeps its producer's row, so only each producer's first packet of a sample takes
    the general path (rx_general), however many send at once; a packet of another producer
    than the last one's costs an entry lookup (rx_lookups, rx_scanned), which the model
    charges (with the 8 rows a tile remembered before, 16 producers sent 43% of their
    packets down the general path, about 1,000 cycles more each)."""
    # the tool's encoders import tvm_spinn light (no TVM): keep that out of later tests' subprocesses
    monkeypatch.setenv("TVM_SPINN_LIGHT_IMPORT", "1")
    t = _tool()
    cases = []
    for case, k in ((t.conv_case("conv_tile", 16, 6, 8, False, 1, 17, producers=16), 16),
                    (t.add_case(8, 6, 1, 21, producers=4), 8)):
        cases += [(dataclasses.replace(case, burst=16), k)]
    items = t.trace_cases([c for c, _ in cases], jobs=2, log=lambda *a: None)
    for (case, entries), item in zip(cases, items):
        f = t.figures([item])
        counts = f["counts"]
        assert counts["starts"] == entries, counts
        assert 0 < counts["lookups"] <= counts["packets_in"], counts
        assert counts["lookups"] <= counts["scanned"] <= entries * counts["lookups"], counts
        # the model (with the lookups the kernel counted) against the trace
        assert t.model_cycles(case.kind, counts) == pytest.approx(f["cycles_total"], rel=0.15), case.shape


def test_the_tool_reads_the_provenance_words_the_runtime_does():
    from tvm_spinn.machine.graph import PROVENANCE_NAMES

    assert _tool().PROVENANCE_NAMES == PROVENANCE_NAMES
