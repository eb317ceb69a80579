#!/usr/bin/env python3
"""Cycle measurement of the kernels as ARM code: the ARM968E-S cost of every executed
instruction, from an instruction trace under qemu.

    python tools/arm_cycles.py [--quick] [--json PATH] [--flags=-Os] [--keep DIR] [--cc CC] [--jobs N]

Each kernel kind is built as the ``.aplx`` build compiles it (``-march=armv5te
-mthumb-interwork -marm -std=gnu99 -ffreestanding -Ofast``: spinnaker_tools.mk and
local.mk; ``-fno-pie``): the kernel (``c_runtime/kernels/<k>.c``) and its spin1 binding
(``c_runtime/spin1/<k>_main.c``, ``spin1_binding.h`` unchanged, ``-DSPINN_REAL_SDK``
against stand-in SDK headers), with stand-ins for the spinnaker_tools code a packet runs
through (below) and a small harness, into one static ARMv5TE Linux program per kernel.
``qemu-arm -cpu arm946 -singlestep -d cpu,nochain -dfilter <measured functions>`` logs the
PC and the flags before every executed instruction of the measured code; each one is
costed with :data:`TIMING` (ARM9EJ-S / ARM9E-S timings and GCC's ARM926EJ-S multiply
latencies, cited per row), with the load-use and multiply-result interlocks taken from the
executed order (a scoreboard of the cycle each register's value is ready). An instruction
the table does not cover, a gap in the trace or a call into code not traced stops the
tool (:class:`CostError`): nothing is silently costed 0.

Cases come from the project's own encoders (``tvm_spinn.machine.configs``; the dense
header as ``tvm_spinn/machine/builder.py`` writes it, with the accumulation block of
``tvm_spinn.tiling.dense``), fixed shapes, every sample's packets in the producer's
order. Every packet takes the way it takes on a core; its cycles are split in phases:

  fiq      the FIQ (exception entry :data:`FIQ_ENTRY_CYCLES`, not traced), spin1's
           ``cc_rx_ready_fiqsr``, the binding's ``on_mcpl`` (queue push);
  event    ``spin1_trigger_user_event`` (called by the FIQ when no drain is pending:
           once per user event), the software interrupt (:data:`IRQ_ENTRY_CYCLES`),
           ``soft_int_isr``, ``schedule``, ``schedule_sysmode`` and a pass of the
           dispatcher calling the user-event callback. One user event per packet: a core
           that keeps up with its input; a busy core drains several packets per event
           and pays this once (``--burst N``: the FIQs of N packets come before the event
           the first raises runs, and the drain takes them all in it, as it does with a
           stream whose packets come within its wait for a next one);
  drain    the binding's ``on_user`` (dequeue, slot bookkeeping), but its wait for a next
           packet (``spinn_binding_poll``), which is idle time, reported on its own;
  receive  ``spinn_<k>_receive``;
  compute  ``spinn_<k>_compute``, its send calls excluded;
  send     the binding's ``spinn_binding_send`` with ``spin1_send_mc_packet``.

Reported per kind (and per case in the JSON): cycles per MAC (compute / the MACs the
kernel counts) and all-in (everything / MACs), per output value (compute / outputs), per
packet in (fiq + event + drain + receive; also without the event), per packet out
(send), per compute event (one compute call), with instruction counts. Not included:
interrupt latency (the interrupted instruction finishing), the dispatcher's sleep
(``spin1_wfi``) and wake-up, wait states of the comms controller and the VIC (costed as
TCM accesses), the timer tick, SDP. ``--quick``: one small case per kind (CI); default:
representative tiles. Exit 0; 1 on a failure; 2, with an install hint, when a tool is
missing.

The stand-ins (:data:`SDK_STANDIN_C`, :data:`SDK_ASM`) follow spinnaker_tools 7.4.1:
``spin1_api/spin1_isr.c`` (``cc_rx_ready_fiqsr``, ``soft_int_isr``, gcc's
``interrupt("IRQ")`` prologue and return as INT_HANDLER declares them),
``spin1_api/spin1_api.c`` (``schedule_sysmode``, ``spin1_trigger_user_event``,
``spin1_send_packet``, one pass of ``dispatch``), ``include/spin1_api.h``
(``spin1_send_mc_packet``), ``sark/sark_alib.s`` (``spin1_int_disable``,
``spin1_fiq_disable``, ``spin1_mode_restore``, ``schedule``): the same memory accesses and
control flow, the comms controller and VIC at their addresses (``spinnaker.h``), mapped as
plain memory. They are compiled as the SDK compiles its library (``-Os``), all in ARM
state (the SDK builds ``spin1_api.c`` as Thumb).

The timing rules are ARM9EJ-S TRM table 8.2 (``shared/notes/board.md``, "ARM968E-S cycle
costs", summarises them), plus its rows that summary leaves out: a shifted register
offset costs LDR/STR one more cycle, a data operation writing the PC 3 (arithmetic) or 4
(logical, or with a shifted operand), LDR into the PC 5 (6 scaled), LDM of one register
2; and from the ARM9E-S TRM: MRS 2, MSR 1 (flags) or 3 (control field).
"""
from __future__ import annotations

import argparse
import dataclasses
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "c_runtime" / "include"
KERNELS = ROOT / "c_runtime" / "kernels"
SPIN1 = ROOT / "c_runtime" / "spin1"

CC = "arm-linux-gnueabi-gcc"
OBJDUMP = "arm-linux-gnueabi-objdump"
NM = "arm-linux-gnueabi-nm"
QEMU = ["qemu-arm", "-cpu", "arm946"]
TOOLS = (CC, OBJDUMP, NM, "qemu-arm")
INSTALL_HINT = "apt-get install -y --no-install-recommends gcc-arm-linux-gnueabi libc6-dev-armel-cross qemu-user"

# The .aplx build's compile flags (spinnaker_tools make/spinnaker_tools.mk with GNU=1 and
# make/local.mk: OTIME = -Ofast; ARM state, THUMB=0). -fno-pie: the .aplx is not
# position independent (Debian's cross gcc defaults to PIE).
TARGET_FLAGS = ["-march=armv5te", "-mthumb-interwork", "-marm", "-std=gnu99", "-ffreestanding", "-fno-pie"]
DEFAULT_OPT = ["-Ofast"]
# spinnaker_tools builds its spin1 library with OSPACE = -Os (spin1_api/Makefile: APIOPT),
# spin1_isr.c in ARM state, spin1_api.c in Thumb state; the stand-ins are all ARM, -Os.
SDK_OPT = ["-Os"]

# ---------------------------------------------------------------------------
# ARM968E-S timing

TRM_EJS = ("ARM9EJ-S Technical Reference Manual (ARM DDI 0222B), 8.1 'Instruction cycle count summary', "
           "Table 8.2 'ARM instruction cycle counts'")
TRM_ES = "ARM9E-S Technical Reference Manual (ARM DDI 0214B), chapter 9 'Instruction Cycle Timings'"
GCC_MD = "GCC gcc/config/arm/arm926ejs.md (ARM926EJ-S pipeline description, from its TRM): multiply reservations"


@dataclass(frozen=True)
class Rule:
    """Issue cycles of an executed instruction of one class and the extra cycles before its
    result can be used ('latency': an instruction reading it that soon waits)."""
    cycles: int
    latency: int
    what: str
    source: str


# Every class an executed instruction can fall in. Anything else raises CostError.
# 'n' in LDM/STM: the registers transferred (cycles computed in _block_cycles).
TIMING: Dict[str, Rule] = {
    "alu": Rule(1, 0, "data processing (also shift by immediate)", TRM_EJS),
    "alu_regshift": Rule(2, 0, "data processing with a register-specified shift", TRM_EJS),
    "alu_pc_arith": Rule(3, 0, "ADD/SUB/RSB/ADC/SBC writing the PC", TRM_EJS),
    "alu_pc_logical": Rule(4, 0, "AND/EOR/ORR/BIC/MOV/MVN/RSC writing the PC", TRM_EJS),
    "alu_pc_shift": Rule(4, 0, "data processing with an operand shift writing the PC", TRM_EJS),
    "clz": Rule(1, 0, "CLZ", TRM_EJS),
    "mrs": Rule(2, 0, "MRS", TRM_ES + ", 9.7 'MRS': always two cycles"),
    "msr_flags": Rule(1, 0, "MSR of the flags field only", TRM_ES + ", 'MSR' (not re-checked for this tool)"),
    "msr_control": Rule(3, 0, "MSR writing the control field", TRM_ES + ", 'MSR' (not re-checked for this tool)"),
    "ldr": Rule(1, 1, "LDR (word), result used by the next instruction: +1", TRM_EJS),
    "ldr_scaled": Rule(2, 1, "LDR with a shifted register offset", TRM_EJS),
    "ldrb": Rule(1, 2, "LDRB: +2 if the next instruction uses the result, +1 if the one after", TRM_EJS),
    "ldrb_scaled": Rule(2, 2, "LDRB with a shifted register offset", TRM_EJS),
    "ldrh": Rule(1, 2, "LDRH/LDRSH/LDRSB: +2 if the next instruction uses the result, +1 if the one after",
                 TRM_EJS),
    "ldr_pc": Rule(5, 0, "LDR loading the PC", TRM_EJS),
    "ldr_pc_scaled": Rule(6, 0, "LDR loading the PC, shifted register offset", TRM_EJS),
    "ldrd": Rule(2, 1, "LDRD; the second word used by the next instruction: +1", TRM_EJS),
    "str": Rule(1, 0, "STR/STRB", TRM_EJS),
    "str_scaled": Rule(2, 0, "STR/STRB with a shifted register offset", TRM_EJS),
    "strh": Rule(1, 0, "STRH", TRM_EJS),
    "strd": Rule(2, 0, "STRD", TRM_EJS),
    "ldm": Rule(1, 1, "LDM: 1 cycle per register (2 for one); the last one used next: +1", TRM_EJS),
    "ldm_pc": Rule(4, 0, "LDM loading the PC: n + 4", TRM_EJS),
    "stm": Rule(1, 0, "STM: 1 cycle per register (2 for one)", TRM_EJS),
    "b": Rule(3, 0, "B/BL taken (a B whose condition fails costs 1, 'cond_failed')", TRM_EJS),
    "bx": Rule(3, 0, "BX/BLX", TRM_EJS),
    "mul": Rule(2, 1, "MUL/MLA: 2 cycles, result 1 cycle later", GCC_MD + " (9_mult1: e*2, latency 3)"),
    "muls": Rule(3, 1, "MULS/MLAS", GCC_MD + " (9_mult2: e*3, latency 4)"),
    "mull": Rule(3, 1, "SMULL/SMLAL/UMULL/UMLAL", GCC_MD + " (9_mult3: e*3, latency 4)"),
    "mulls": Rule(4, 1, "SMULLS/SMLALS/UMULLS/UMLALS", GCC_MD + " (9_mult4: e*4, latency 5)"),
    "smulxy": Rule(1, 1, "SMULxy/SMLAxy/SMULWy/SMLAWy: 1 cycle, result 1 cycle later",
                   GCC_MD + " (9_mult5: e, latency 2)"),
    "smlalxy": Rule(2, 1, "SMLALxy", GCC_MD + " (9_mult6: e*2, latency 3)"),
    "cond_failed": Rule(1, 0, "any instruction whose condition fails (a branch not taken)", TRM_EJS),
}

# Exception entry, not in the trace: the pipeline refill (assumed as for a taken branch, 3) and the
# vector's load of the PC (LDR into the PC, 5): sark_alib.s 'ldr pc, fiq_vec' at 0x1C for
# the FIQ, 'ldr pc, [pc, #-0xff0]' (the VIC's vector address) at 0x18 for an IRQ. The
# handlers' own prologue and return (gcc's interrupt("IRQ"): sub lr; push; ldm {..pc}^)
# are traced.
FIQ_ENTRY_CYCLES = TIMING["b"].cycles + TIMING["ldr_pc"].cycles
IRQ_ENTRY_CYCLES = TIMING["b"].cycles + TIMING["ldr_pc"].cycles

PHASES = ("fiq", "event", "drain", "receive", "compute", "send")
# the drain's wait for a next packet (spinn_binding_poll): idle time, apart from the phases
POLL = "poll"
PACKET_IN_PHASES = ("fiq", "event", "drain", "receive")


class CostError(RuntimeError):
    """An executed instruction the timing table does not cover (or cannot decode)."""


PC_WRITERS = frozenset({"b", "bx", "ldr_pc", "ldr_pc_scaled", "ldm_pc", "alu_pc_arith", "alu_pc_logical",
                        "alu_pc_shift"})


@dataclass
class Insn:
    cls: str
    cond: int
    cycles: int  # issue cycles when executed
    srcs: Tuple[int, ...]
    dsts: Tuple[Tuple[int, int], ...]  # (register, extra latency)
    call: bool = False

    @property
    def writes_pc(self) -> bool:
        return self.cls in PC_WRITERS


def _bit(w: int, i: int) -> int:
    return (w >> i) & 1


def _fail(word: int, why: str) -> CostError:
    return CostError(f"instruction {word:08x}: {why} (not in the timing table)")


def _block_cycles(cls: str, n: int) -> int:
    """LDM/STM of n registers (ldm_pc: + the PC's extra)."""
    if cls == "ldm_pc":
        return max(n * _rule("ldm").cycles, 2) + _rule("ldm_pc").cycles
    return max(n * _rule(cls).cycles, 2)


def _rule(cls: str) -> Rule:
    if cls not in TIMING:
        raise CostError(f"class {cls!r} is not in the timing table")
    return TIMING[cls]


R = -1  # in a destination: the class's result latency


def _insn(cls: str, cond: int, srcs: Iterable[int], dsts: Iterable[Tuple[int, int]], cycles: Optional[int] = None,
          call: bool = False) -> Insn:
    """dsts: (register, extra latency), R for the class's result latency."""
    rule = _rule(cls)
    return Insn(cls, cond, rule.cycles if cycles is None else cycles, tuple(r for r in srcs if r != 15),
                tuple((r, rule.latency if l == R else l) for r, l in dsts if r != 15), call)


def decode(word: int) -> Insn:
    """Class, issue cycles and register dependencies of an ARM (ARMv5TE, ARM state)
    instruction. Raises CostError for anything the table has no row for."""
    cond = word >> 28
    op = (word >> 25) & 7
    if cond == 0xF:
        if op == 0b101:  # BLX <imm>
            return _insn("bx", 14, (), ((14, 0),), call=True)
        raise _fail(word, "unconditional-space instruction (PLD, ...)")
    rn, rd, rs, rm = (word >> 16) & 15, (word >> 12) & 15, (word >> 8) & 15, word & 15
    if op in (0, 1):
        if op == 0 and (word & 0x90) == 0x90:  # multiplies and the extra loads / stores
            sh = (word >> 5) & 3
            if sh == 0:
                if (word >> 23) & 3 == 0 and not _bit(word, 22):  # MUL, MLA (Rd is bits 19-16)
                    acc = (rd,) if _bit(word, 21) else ()
                    return _insn("muls" if _bit(word, 20) else "mul", cond, (rm, rs) + acc,
                                 ((rn, R),))
                if (word >> 23) & 3 == 1:  # UMULL, UMLAL, SMULL, SMLAL (RdHi 19-16, RdLo 15-12)
                    acc = (rd, rn) if _bit(word, 21) else ()
                    return _insn("mulls" if _bit(word, 20) else "mull", cond, (rm, rs) + acc, ((rd, R), (rn, R)))
                raise _fail(word, "SWP or an undefined multiply encoding")
            load, pre, wb_bit, imm = _bit(word, 20), _bit(word, 24), _bit(word, 21), _bit(word, 22)
            offset = () if imm else (rm,)
            wb = ((rn, 0),) if (not pre or wb_bit) else ()
            if load:  # LDRH, LDRSB, LDRSH
                return _insn("ldrh", cond, (rn,) + offset, ((rd, R),) + wb)
            if sh == 1:
                return _insn("strh", cond, (rn, rd) + offset, wb)
            if rd & 1:
                raise _fail(word, "LDRD/STRD with an odd register")
            if sh == 2:
                return _insn("ldrd", cond, (rn,) + offset, ((rd, 0), (rd + 1, R)) + wb)
            return _insn("strd", cond, (rn, rd, rd + 1) + offset, wb)
        if (word >> 23) & 3 == 0b10 and not _bit(word, 20):  # the miscellaneous space
            if op == 1:
                if not _bit(word, 21):
                    raise _fail(word, "undefined encoding")
                return _insn("msr_flags" if (word >> 16) & 15 == 8 else "msr_control", cond, (), ())
            low, op2 = (word >> 4) & 15, (word >> 21) & 3
            if low == 0:
                if _bit(word, 21):
                    return _insn("msr_flags" if (word >> 16) & 15 == 8 else "msr_control", cond, (rm,), ())
                return _insn("mrs", cond, (), ((rd, 0),))
            if low == 1 and op2 == 1:
                return _insn("bx", cond, (rm,), ())
            if low == 3 and op2 == 1:
                return _insn("bx", cond, (rm,), ((14, 0),), call=True)
            if low == 1 and op2 == 3:
                return _insn("clz", cond, (rm,), ((rd, 0),))
            if low & 9 == 8:  # SMLAxy, SMLAWy / SMULWy, SMLALxy, SMULxy (Rd is bits 19-16)
                if op2 == 0:
                    return _insn("smulxy", cond, (rm, rs, rd), ((rn, R),))
                if op2 == 1:
                    acc = () if _bit(word, 5) else (rd,)
                    return _insn("smulxy", cond, (rm, rs) + acc, ((rn, R),))
                if op2 == 2:
                    return _insn("smlalxy", cond, (rm, rs, rd, rn), ((rd, R), (rn, R)))
                return _insn("smulxy", cond, (rm, rs), ((rn, R),))
            raise _fail(word, "QADD/QSUB/QDADD/QDSUB, BKPT or an undefined encoding")
        opcode = (word >> 21) & 15  # data processing
        srcs: List[int] = [] if opcode in (13, 15) else [rn]
        regshift = shifted = False
        if op == 0:
            srcs.append(rm)
            if _bit(word, 4):
                regshift = True
                srcs.append(rs)
            else:
                shifted = (word >> 5) & 0x7F != 0  # LSL #0 is no shift
        writes = opcode not in (8, 9, 10, 11)
        if writes and rd == 15:
            if regshift:
                raise _fail(word, "data processing writing the PC with a register-specified shift")
            cls = "alu_pc_shift" if shifted else "alu_pc_arith" if opcode in (2, 3, 4, 5, 6) else "alu_pc_logical"
            return _insn(cls, cond, srcs, ())
        return _insn("alu_regshift" if regshift else "alu", cond, srcs, ((rd, 0),) if writes else ())
    if op in (2, 3):  # LDR, STR, LDRB, STRB
        if op == 3 and _bit(word, 4):
            raise _fail(word, "media instruction or undefined encoding")
        scaled = op == 3 and (word >> 4) & 0xFF != 0
        srcs = [rn] + ([rm] if op == 3 else [])
        wb = ((rn, 0),) if (not _bit(word, 24) or _bit(word, 21)) else ()
        if _bit(word, 20):
            if rd == 15:
                return _insn("ldr_pc_scaled" if scaled else "ldr_pc", cond, srcs, wb)
            cls = ("ldrb" if _bit(word, 22) else "ldr") + ("_scaled" if scaled else "")
            return _insn(cls, cond, srcs, ((rd, R),) + wb)
        return _insn("str_scaled" if scaled else "str", cond, srcs + [rd], wb)
    if op == 4:  # LDM, STM
        regs = [r for r in range(16) if _bit(word, r)]
        if not regs:
            raise _fail(word, "LDM/STM without registers")
        wb = ((rn, 0),) if _bit(word, 21) and not (_bit(word, 20) and rn in regs) else ()
        if _bit(word, 20):
            loads_pc = 15 in regs
            loaded = [r for r in regs if r != 15]
            last = 0 if loads_pc else R  # the last register loaded
            dsts = tuple((r, last if i == len(loaded) - 1 else 0) for i, r in enumerate(loaded)) + wb
            cls = "ldm_pc" if loads_pc else "ldm"
            return _insn(cls, cond, (rn,), dsts, _block_cycles(cls, len(regs)))
        return _insn("stm", cond, [rn] + regs, wb, _block_cycles("stm", len(regs)))
    if op == 5:  # B, BL
        return _insn("b", cond, (), ((14, 0),) if _bit(word, 24) else (), call=bool(_bit(word, 24)))
    raise _fail(word, "coprocessor instruction or SWI")


def _cond_table() -> List[List[bool]]:
    """passes[cond][NZCV] for the 15 conditions (AL included)."""
    table = []
    for cond in range(15):
        row = []
        for f in range(16):
            n, z, c, v = f >> 3 & 1, f >> 2 & 1, f >> 1 & 1, f & 1
            row.append([z, not z, c, not c, n, not n, v, not v, c and not z, not c or z, n == v, n != v,
                        not z and n == v, z or n != v, True][cond])
        table.append([bool(x) for x in row])
    return table


COND_PASSES = _cond_table()


class Costing:
    """Cycles of an executed instruction sequence: a scoreboard of the cycle at which each
    register's value can be read. Condition-failed instructions cost 1 and read nothing."""

    def __init__(self) -> None:
        self.now = 0
        self.ready = [0] * 16

    def step(self, ins: Insn, flags: int) -> Tuple[int, bool]:
        """(cycles, executed) of the next instruction; flags = the NZCV nibble before it."""
        if ins.cond != 14 and not COND_PASSES[ins.cond][flags]:
            self.now += 1
            return 1, False
        ready, start = self.ready, self.now
        t = start
        for r in ins.srcs:
            if ready[r] > t:
                t = ready[r]
        self.now = end = t + ins.cycles
        for r, lat in ins.dsts:
            ready[r] = end + lat
        return end - start, True


def cost_sequence(words: Sequence[int], flags: int = 0) -> List[int]:
    """Cycles of each instruction of a straight-line sequence (all flags as given)."""
    c = Costing()
    return [c.step(decode(w), flags)[0] for w in words]


# ---------------------------------------------------------------------------
# The SDK stand-ins, the harness

SPIN1_API_H = r"""
/* Stand-in for spinnaker_tools' spin1_api.h, data_specification.h and simulation.h (the
 * binding is built with -DSPINN_REAL_SDK, as the .aplx): declarations as in the SDK 7.4.1;
 * spin1_send_mc_packet is static inline there too. tools/arm_cycles.py */
#ifndef ARM_CYCLES_SPIN1_API_H
#define ARM_CYCLES_SPIN1_API_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
typedef unsigned int uint;
typedef unsigned char uchar;
typedef uint32_t *address_t;
#define SUCCESS ((uint)1)
#define FAILURE ((uint)0)
enum { MC_PACKET_RECEIVED = 0, DMA_TRANSFER_DONE = 1, TIMER_TICK = 2, SDP_PACKET_RX = 3, USER_EVENT = 4,
       MCPL_PACKET_RECEIVED = 5, FR_PACKET_RECEIVED = 6, FRPL_PACKET_RECEIVED = 7, NUM_EVENTS = 8 };
enum { NO_PAYLOAD = 0, WITH_PAYLOAD = 1 };
enum { PKT_MC = 0x00000000, PKT_PL = 0x00020000, PKT_MC_PL = 0x00020000 };
typedef void (*callback_t)(uint, uint);
void spin1_callback_on(uint event_id, callback_t cback, int priority);
void spin1_callback_off(uint event_id);
void spin1_set_timer_tick(uint time);
uint spin1_trigger_user_event(uint arg0, uint arg1);
uint spin1_send_packet(uint key, uint data, uint TCR);
static inline uint spin1_send_mc_packet(uint key, uint data, uint load) {
    uint tcr = (load) ? PKT_MC_PL : PKT_MC;
    return spin1_send_packet(key, data, tcr);
}
void *spin1_malloc(uint bytes);
void spin1_delay_us(uint n);
uint spin1_int_disable(void);
uint spin1_fiq_disable(void);
void spin1_mode_restore(uint value);
enum { RTE_MALLOC = 10, RTE_SWERR = 13 };
__attribute__((noreturn)) void rt_error(uint code, ...);
typedef struct region_desc_t { void *pointer; uint32_t checksum; uint32_t n_words; } region_desc_t;
typedef struct data_specification_metadata_t {
    uint32_t magic_number;
    uint32_t version;
    region_desc_t regions[];
} data_specification_metadata_t;
data_specification_metadata_t *data_specification_get_data_address(void);
bool data_specification_read_header(data_specification_metadata_t *ds_regions);
void *data_specification_get_region(uint32_t region, data_specification_metadata_t *ds_regions);
typedef void (*prov_callback_t)(address_t);
typedef void (*resume_callback_t)(void);
typedef void (*exit_callback_t)(void);
bool simulation_initialise(address_t address, uint32_t expected_application_magic_number,
                           uint32_t *timer_period, uint32_t *simulation_ticks_pointer,
                           uint32_t *infinite_run_pointer, uint32_t *time_pointer,
                           int sdp_packet_callback_priority, int dma_transfer_complete_priority);
void simulation_run(void);
void simulation_set_provenance_function(prov_callback_t provenance_function, address_t provenance_data_address);
void simulation_set_exit_function(exit_callback_t exit_function);
bool simulation_is_finished(void);
void simulation_handle_pause_resume(resume_callback_t callback);
void simulation_ready_to_read(void);

/* spin1_api_params.h, spinnaker.h: the scheduler's queues, the peripherals */
#define TX_PACKET_QUEUE_SIZE 16
#define USER_EVENT_QUEUE_SIZE 4
#define TASK_QUEUE_SIZE 16
#define N_TASK_QUEUES 4
typedef struct { callback_t cback; int priority; } cback_t;
typedef struct { uint key; uint data; uint TCR; } packet_t;
typedef struct { uint start; uint end; packet_t queue[TX_PACKET_QUEUE_SIZE]; } tx_packet_queue_t;
typedef struct { uint arg0; uint arg1; } user_event_t;
typedef struct { uint start; uint end; user_event_t queue[USER_EVENT_QUEUE_SIZE]; } user_event_queue_t;
typedef struct { callback_t cback; uint arg0; uint arg1; } task_t;
typedef struct { uint start; uint end; task_t queue[TASK_QUEUE_SIZE]; } task_queue_t;
typedef struct { uint in_timer_callback; uint number_timer_tic_in_queue; } diagnostics_t;
extern cback_t callback[NUM_EVENTS];
extern user_event_queue_t user_event_queue;
extern uint highest_priority;
#define CC_BASE 0x10000000u
#define VIC_BASE 0x1f000000u
#define CC_TCR (0x00 / 4)
#define CC_TXDATA (0x04 / 4)
#define CC_TXKEY (0x08 / 4)
#define CC_RSR (0x0c / 4)
#define CC_RXDATA (0x10 / 4)
#define CC_RXKEY (0x14 / 4)
#define VIC_ENABLE (0x10 / 4)
#define VIC_DISABLE (0x14 / 4)
#define VIC_SOFT_SET (0x18 / 4)
#define VIC_SOFT_CLR (0x1c / 4)
#define VIC_VADDR (0x30 / 4)
#define SOFTWARE_INT 1
#define CC_TMT_INT 11
#define TIMER_BASE 0x21000000u
#define T1_COUNT (0x04 / 4)
#define T1_BG_LOAD (0x18 / 4)
static volatile uint *const tc = (uint *)TIMER_BASE; /* spinnaker.h: timer 1 counts the clock down */
#define TX_TCR_MCDEFAULT 0x00000000
#define TX_FULL_MASK 0x40000000
void cc_rx_ready_fiqsr(void);
void soft_int_isr(void);
void dispatch_once(void);
void schedule(uchar event_id, uint arg0, uint arg1);
void schedule_sysmode(uchar event_id, uint arg0, uint arg1);
void exc_enter(void (*handler)(void));
#endif
"""

# After spinnaker_tools 7.4.1 spin1_api/spin1_isr.c and spin1_api/spin1_api.c (see the
# module docstring). Compiled with the kernel flags; the handlers' exception return is
# made a plain return (see _patch_handlers) so that they run in user mode.
SDK_STANDIN_C = r"""
#include "spin1_api.h"
#define INT_HANDLER void __attribute__((interrupt("IRQ"))) /* sark.h, GNU */
static volatile uint *const cc = (uint *)CC_BASE;
static volatile uint *const vic = (uint *)VIC_BASE;
cback_t callback[NUM_EVENTS];
tx_packet_queue_t tx_packet_queue;
user_event_queue_t user_event_queue;
static task_queue_t task_queue[N_TASK_QUEUES];
uint highest_priority;
static volatile uint run = 1;
static volatile uint paused;
static diagnostics_t diagnostics;

INT_HANDLER cc_rx_ready_fiqsr(void) {
    uint rx_status = cc[CC_RSR];
    if (rx_status & PKT_PL) {
        uint rx_data = cc[CC_RXDATA];
        uint rx_key = cc[CC_RXKEY];
        callback[MCPL_PACKET_RECEIVED].cback(rx_key, rx_data);
    } else {
        uint rx_key = cc[CC_RXKEY];
        callback[MC_PACKET_RECEIVED].cback(rx_key, 0);
    }
}

INT_HANDLER soft_int_isr(void) {
    uint arg0 = user_event_queue.queue[user_event_queue.start].arg0;
    uint arg1 = user_event_queue.queue[user_event_queue.start].arg1;
    user_event_queue.start = (user_event_queue.start + 1) % USER_EVENT_QUEUE_SIZE;
    if (user_event_queue.start == user_event_queue.end) vic[VIC_SOFT_CLR] = (1 << SOFTWARE_INT);
    if (callback[USER_EVENT].cback != NULL) schedule(USER_EVENT, arg0, arg1);
    vic[VIC_VADDR] = 1;
}

void schedule_sysmode(uchar event_id, uint arg0, uint arg1) {
    if (callback[event_id].priority <= 0) {
        callback[event_id].cback(arg0, arg1);
    } else {
        task_queue_t *tq = &task_queue[callback[event_id].priority - 1];
        if ((tq->end + 1) % TASK_QUEUE_SIZE != tq->start) {
            tq->queue[tq->end].cback = callback[event_id].cback;
            tq->queue[tq->end].arg0 = arg0;
            tq->queue[tq->end].arg1 = arg1;
            tq->end = (tq->end + 1) % TASK_QUEUE_SIZE;
            if (event_id == TIMER_TICK) diagnostics.number_timer_tic_in_queue += 1;
        }
    }
}

uint spin1_trigger_user_event(uint arg0, uint arg1) {
    uint cpsr = spin1_int_disable();
    uint new_end = (user_event_queue.end + 1) % USER_EVENT_QUEUE_SIZE;
    if (new_end == user_event_queue.start) {
        spin1_mode_restore(cpsr);
        return FAILURE;
    }
    user_event_queue.queue[user_event_queue.end].arg0 = arg0;
    user_event_queue.queue[user_event_queue.end].arg1 = arg1;
    vic[VIC_SOFT_SET] = (1 << SOFTWARE_INT);
    user_event_queue.end = new_end;
    spin1_mode_restore(cpsr);
    return SUCCESS;
}

uint spin1_send_packet(uint key, uint data, uint TCR) {
    uint rc = SUCCESS;
    uint cpsr = spin1_int_disable();
    cc[CC_TCR] = TX_TCR_MCDEFAULT;
    (void)cc[CC_TCR];
    if (cc[CC_TCR] & TX_FULL_MASK) {
        if ((tx_packet_queue.end + 1) % TX_PACKET_QUEUE_SIZE == tx_packet_queue.start) {
            rc = FAILURE;
        } else {
            tx_packet_queue.queue[tx_packet_queue.end].key = key;
            tx_packet_queue.queue[tx_packet_queue.end].data = data;
            tx_packet_queue.queue[tx_packet_queue.end].TCR = TCR;
            tx_packet_queue.end = (tx_packet_queue.end + 1) % TX_PACKET_QUEUE_SIZE;
            vic[VIC_ENABLE] = (1 << CC_TMT_INT);
        }
    } else {
        if ((tx_packet_queue.end + 1) % TX_PACKET_QUEUE_SIZE == tx_packet_queue.start) {
            uint hkey = tx_packet_queue.queue[tx_packet_queue.start].key;
            uint hdata = tx_packet_queue.queue[tx_packet_queue.start].data;
            uint hTCR = tx_packet_queue.queue[tx_packet_queue.start].TCR;
            tx_packet_queue.start = (tx_packet_queue.start + 1) % TX_PACKET_QUEUE_SIZE;
            cc[CC_TCR] = hTCR;
            if (hTCR & PKT_PL) cc[CC_TXDATA] = hdata;
            cc[CC_TXKEY] = hkey;
        }
        if (tx_packet_queue.start == tx_packet_queue.end) {
            cc[CC_TCR] = TCR;
            if (TCR & PKT_PL) cc[CC_TXDATA] = data;
            cc[CC_TXKEY] = key;
            vic[VIC_DISABLE] = 1 << CC_TMT_INT;
        } else {
            tx_packet_queue.queue[tx_packet_queue.end].key = key;
            tx_packet_queue.queue[tx_packet_queue.end].data = data;
            tx_packet_queue.queue[tx_packet_queue.end].TCR = TCR;
            tx_packet_queue.end = (tx_packet_queue.end + 1) % TX_PACKET_QUEUE_SIZE;
        }
    }
    spin1_mode_restore(cpsr);
    return rc;
}

/* One pass of dispatch()'s loop: woken by an interrupt, run what is queued, then (on a
 * core) go back to sleep in spin1_wfi(), which is not modelled. */
void dispatch_once(void) {
    uint i = 0;
    uint cpsr = spin1_int_disable();
    task_queue_t *tq;
    volatile callback_t cback;
    while (run && i < highest_priority) {
        tq = &task_queue[i];
        i++;
        if (tq->start != tq->end) {
            cback = tq->queue[tq->start].cback;
            uint arg0 = tq->queue[tq->start].arg0;
            uint arg1 = tq->queue[tq->start].arg1;
            tq->start = (tq->start + 1) % TASK_QUEUE_SIZE;
            if (cback != NULL) {
                spin1_mode_restore(cpsr);
                if (cback == callback[TIMER_TICK].cback) diagnostics.in_timer_callback = 1;
                if (cback != callback[TIMER_TICK].cback || !paused) cback(arg0, arg1);
                if (cback == callback[TIMER_TICK].cback) {
                    if (diagnostics.number_timer_tic_in_queue > 0) diagnostics.number_timer_tic_in_queue -= 1;
                    diagnostics.in_timer_callback = 0;
                }
                cpsr = spin1_int_disable();
                i = 0;
            }
        }
    }
    spin1_mode_restore(cpsr);
}
"""

# sark_alib.s (GNU syntax). In user mode (qemu-arm) the MSRs leave the mode and the
# interrupt masks alone, as they must here. exc_enter (the harness's, not measured) runs an
# interrupt handler as the core does after the exception entry: lr = return address + 4.
SDK_ASM = r"""
    .syntax unified
    .arm
    .text
    .global spin1_int_disable, spin1_fiq_disable, spin1_mode_restore, schedule
    .type spin1_int_disable, %function
spin1_int_disable:
    mrs r0, cpsr
    orr r1, r0, #0xc0
    msr cpsr_c, r1
    bx lr
    .size spin1_int_disable, .-spin1_int_disable
    .type spin1_fiq_disable, %function
spin1_fiq_disable:
    mrs r0, cpsr
    orr r1, r0, #0x40
    msr cpsr_c, r1
    bx lr
    .size spin1_fiq_disable, .-spin1_fiq_disable
    .type spin1_mode_restore, %function
spin1_mode_restore:
    msr cpsr_cxsf, r0
    bx lr
    .size spin1_mode_restore, .-spin1_mode_restore
    .type schedule, %function
schedule:
    push {r12, lr}
    mrs r12, cpsr
    bic lr, r12, #0x1f
    orr lr, lr, #0x1f
    msr cpsr_c, lr
    push {r12, lr}
    bl schedule_sysmode
    pop {r12, lr}
    msr cpsr_c, r12
    pop {r12, lr}
    bx lr
    .size schedule, .-schedule
"""

HARNESS_ASM = r"""
    .syntax unified
    .arm
    .text
    .global exc_enter
    .type exc_enter, %function
exc_enter:
    push {r4, lr}
    mov r4, r0
    add lr, pc, #4
    bx r4
    pop {r4, pc}
    .size exc_enter, .-exc_enter
"""

# The harness (not measured): the data-spec regions hold the case's config, c_main starts
# the binding, then every packet goes through the FIQ and, when it raised the software
# interrupt, the soft-int ISR and one pass of the dispatcher. Prints the provenance words.
HARNESS_C = r"""
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include "spin1_api.h"
void c_main(void);
static uint32_t system_region[3] = {APPLICATION_NAME_HASH, 1000u, 0u};
static uint32_t provenance_region[64];
static struct { data_specification_metadata_t m; region_desc_t r[3]; } ds;
static prov_callback_t prov_fn;
static address_t prov_at;

void spin1_callback_on(uint e, callback_t c, int p) {
    callback[e].cback = c;
    callback[e].priority = p;
    if (p > (int)highest_priority) highest_priority = (uint)p;
}
void spin1_callback_off(uint e) { callback[e].cback = NULL; }
void spin1_set_timer_tick(uint t) { (void)t; }
void *spin1_malloc(uint bytes) { return malloc(bytes); }
void spin1_delay_us(uint n) { (void)n; }
void rt_error(uint code, ...) { printf("rt_error %u\n", code); exit(3); }
data_specification_metadata_t *data_specification_get_data_address(void) { return &ds.m; }
bool data_specification_read_header(data_specification_metadata_t *d) { return d->magic_number == 0xAD130AD6u; }
void *data_specification_get_region(uint32_t region, data_specification_metadata_t *d) {
    return d->regions[region].pointer;
}
bool simulation_initialise(address_t a, uint32_t magic, uint32_t *t, uint32_t *s, uint32_t *i, uint32_t *n,
                           int sdp, int dma) {
    (void)a; (void)magic; (void)s; (void)i; (void)n; (void)sdp; (void)dma;
    *t = 1000u;
    return true;
}
void simulation_set_provenance_function(prov_callback_t f, address_t a) { prov_fn = f; prov_at = a; }
void simulation_set_exit_function(exit_callback_t f) { (void)f; }
bool simulation_is_finished(void) { return false; }
void simulation_handle_pause_resume(resume_callback_t r) { (void)r; }
void simulation_ready_to_read(void) {}
void simulation_run(void) {}

static uint32_t next_word(FILE *f) {
    unsigned long v;
    if (fscanf(f, "%lx", &v) != 1) { printf("bad case file\n"); exit(2); }
    return (uint32_t)v;
}

int main(int argc, char **argv) {
    FILE *f = argc == 3 ? fopen(argv[1], "r") : NULL, *out;
    uint32_t n, i, j, n_packets, burst, sum = 0u, *region;
    volatile uint *cc, *vic;
    if (!f) { printf("usage: harness CASE OUT\n"); return 2; }
    cc = mmap((void *)CC_BASE, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    vic = mmap((void *)VIC_BASE, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (cc != (volatile uint *)CC_BASE || vic != (volatile uint *)VIC_BASE) { printf("mmap failed\n"); return 2; }
    if (mmap((void *)TIMER_BASE, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) !=
        (void *)TIMER_BASE) { printf("mmap failed\n"); return 2; }
    n = next_word(f);
    region = malloc(4u * (n + 5u)); /* n_words, checksum, lost timeout, lost bit, send gap, the config */
    for (i = 0; i < n; i++) { region[5u + i] = next_word(f); sum += region[5u + i]; }
    region[0] = n; region[1] = sum; region[2] = 1000u; region[3] = 0u; region[4] = 0u;
    ds.m.magic_number = 0xAD130AD6u;
    ds.r[0].pointer = system_region;
    ds.r[1].pointer = region;
    ds.r[2].pointer = provenance_region;
    c_main();
    burst = next_word(f); /* packets whose FIQs come before the user event they raise runs */
    n_packets = next_word(f);
    for (i = 0; i < n_packets;) {
        for (j = 0; j < burst && i < n_packets; j++, i++) {
            uint32_t key = next_word(f), payload = next_word(f);
            cc[CC_RSR] = PKT_PL;
            cc[CC_RXDATA] = payload;
            cc[CC_RXKEY] = key;
            exc_enter(cc_rx_ready_fiqsr);
        }
        if (vic[VIC_SOFT_SET] & (1u << SOFTWARE_INT)) {
            vic[VIC_SOFT_SET] = 0u;
            while (user_event_queue.start != user_event_queue.end) exc_enter(soft_int_isr);
            dispatch_once();
        }
    }
    prov_fn(prov_at);
    out = fopen(argv[2], "w"); /* not stdout: that carries qemu's log */
    if (!out) return 2;
    fprintf(out, "prov");
    for (i = 0; i < SPINN_PROV_WORDS; i++) fprintf(out, " %u", prov_at[i]);
    fprintf(out, "\n");
    fclose(out);
    return 0;
}
"""

# spinn_counters_t then the binding's words (tvm_spinn.machine.graph.PROVENANCE_NAMES)
PROVENANCE_NAMES = ("packets_in", "packets_out", "computes", "outputs", "blocks", "macs_lo", "macs_hi",
                    "dropped", "saturated", "rx_general", "rx_lookups", "rx_scanned", "markers_in", "released", "lost_out", "rx_overflow",
                    "send_failed", "compute_failed", "trigger_failed")

KERNEL_NAMES = ("dense_tile", "dense_reduce", "conv_tile", "pool_tile", "add_tile", "conv_reduce")
# Functions of the measured objects never traced: start-up, provenance, the timer.
NOT_TRACED = re.compile(r"^(c_main|store_provenance|on_tick|on_resume|on_exit|spinn_\w+_(init|workspace))$")


def missing_tools() -> List[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _run(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} ... failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def _patch_handlers(asm: str) -> str:
    """gcc's interrupt("IRQ") return (LDM ...{..., pc}^ or SUBS pc, lr, #4) as a plain
    return of the same class and cost (the '^' / S only restores the CPSR, which user mode
    cannot): the handlers then run under qemu-arm."""
    out, n = re.subn(r"^(\s*ldm(?:fd|ia)?\s+sp!,\s*\{[^}]*pc\})\^", r"\1", asm, flags=re.M)
    out, m = re.subn(r"^(\s*)(subs|movs)(\s+pc,\s*lr)", lambda x: x.group(1) + x.group(2)[:-1] + x.group(3),
                     out, flags=re.M)
    if n + m < 2 or re.search(r"\}\^|\b(subs|movs)\s+pc", out):
        raise RuntimeError("could not make the interrupt handlers' return a plain return")
    return out


@dataclass
class Build:
    exe: Path
    ranges: List[Tuple[int, int]]  # measured functions [lo, hi)
    insns: Dict[int, int]  # address -> instruction word, in the measured ranges
    roots: Dict[int, Tuple[str, bool, str]]  # entry -> (phase, top level, root name)
    symbols: Dict[int, str]


def _flags(opt: Sequence[str]) -> List[str]:
    return TARGET_FLAGS + list(opt)


def build_common(work: Path) -> List[Path]:
    """The SDK stand-ins (the SDK's own flags, whatever --flags says) and the harness, shared by
    every kind."""
    sdk = work / "sdk"
    sdk.mkdir(exist_ok=True)
    (sdk / "spin1_api.h").write_text(SPIN1_API_H)
    for h in ("data_specification.h", "simulation.h"):
        (sdk / h).write_text('#include "spin1_api.h"\n')
    (work / "sdk_standin.c").write_text(SDK_STANDIN_C)
    (work / "sdk_asm.s").write_text(SDK_ASM)
    (work / "harness_asm.s").write_text(HARNESS_ASM)
    (work / "harness.c").write_text(HARNESS_C)
    _run([CC, *_flags(SDK_OPT), f"-I{sdk}", "-S", work / "sdk_standin.c", "-o", work / "sdk_standin.s"])
    (work / "sdk_standin.s").write_text(_patch_handlers((work / "sdk_standin.s").read_text()))
    objs = []
    for src in ("sdk_standin.s", "sdk_asm.s"):
        obj = work / (src[:-2] + ".o")
        _run([CC, "-march=armv5te", "-marm", "-c", work / src, "-o", obj])
        objs.append(obj)
    _run([CC, "-march=armv5te", "-marm", "-c", work / "harness_asm.s", "-o", work / "harness_asm.o"])
    _run([CC, "-march=armv5te", "-marm", "-std=gnu99", "-O1", "-fno-pie", f"-I{sdk}",
          "-DAPPLICATION_NAME_HASH=0x4c594341u", f"-DSPINN_PROV_WORDS={len(PROVENANCE_NAMES)}u", "-c",
          work / "harness.c", "-o", work / "harness.o"])
    return objs


def _text_ranges(map_text: str, objs: Sequence[Path]) -> List[Tuple[int, int]]:
    """[lo, hi) of every .text input section of the given objects, from the linker map."""
    names = {str(o) for o in objs}
    out = []
    lines = map_text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^ (\.text\S*)\s*(?:(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(\S+))?\s*$", line)
        if not m:
            continue
        if m.group(2) is None:  # a long section name: the rest is on the next line
            m2 = re.match(r"^\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(\S+)\s*$", lines[i + 1] if i + 1 < len(lines) else "")
            if not m2:
                continue
            addr, size, obj = m2.groups()
        else:
            addr, size, obj = m.group(2), m.group(3), m.group(4)
        if obj in names and int(size, 16):
            out.append((int(addr, 16), int(addr, 16) + int(size, 16)))
    return sorted(out)


def build_kind(work: Path, name: str, common: List[Path], opt: Sequence[str], cc: str = CC) -> Build:
    """Kernel + binding (measured, the .aplx flags; compiled by `cc`) linked with the stand-ins
    and the harness."""
    sdk = work / "sdk"
    kobj, bobj = work / f"{name}_kernel.o", work / f"{name}_binding.o"
    flags = _flags(opt)
    _run([cc, *flags, f"-I{INCLUDE}", "-c", KERNELS / f"{name}.c", "-o", kobj])
    _run([cc, *flags, "-DSPINN_REAL_SDK", "-DAPPLICATION_NAME_HASH=0x4c594341u", f"-I{sdk}", f"-I{INCLUDE}",
          f"-I{SPIN1}", "-c", SPIN1 / f"{name}_main.c", "-o", bobj])
    exe, mapfile = work / f"{name}.elf", work / f"{name}.map"
    measured = [kobj, bobj] + common
    # arm-none-eabi objects use short enums; none crosses to the harness
    extra = ["-Wl,--no-enum-size-warning"] if cc != CC else []
    _run([CC, "-march=armv5te", "-marm", "-static", "-no-pie", *measured, work / "harness.o",
          work / "harness_asm.o", "-o", exe, f"-Wl,-Map={mapfile}", *extra])
    sections = _text_ranges(mapfile.read_text(), measured)
    if not sections:
        raise RuntimeError(f"{name}: no measured code found in the link map")
    symbols: Dict[int, str] = {}
    funcs: List[Tuple[int, int, str]] = []
    for line in _run([NM, "-S", "-n", "--defined-only", exe]).stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tT":
            lo, size = int(parts[0], 16), int(parts[1], 16)
            if any(a <= lo < b for a, b in sections):
                funcs.append((lo, lo + size, parts[3]))
                symbols[lo] = parts[3]
    ranges: List[Tuple[int, int]] = []
    for lo, hi, fn in funcs:
        if NOT_TRACED.match(fn) or hi <= lo:
            continue
        if ranges and ranges[-1][1] >= lo - 8:  # adjacent (or a literal pool apart)
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], hi))
        else:
            ranges.append((lo, hi))
    insns: Dict[int, int] = {}
    for lo, hi in ranges:
        dump = _run([OBJDUMP, "-d", f"--start-address={lo:#x}", f"--stop-address={hi:#x}", exe]).stdout
        for m in re.finditer(r"^\s*([0-9a-f]+):\s+([0-9a-f]{8})\s", dump, flags=re.M):
            insns[int(m.group(1), 16)] = int(m.group(2), 16)
    roots: Dict[int, Tuple[str, bool, str]] = {}
    wanted = {f"spinn_{name}_receive": ("receive", False, "receive"),
              f"spinn_{name}_compute": ("compute", False, "compute"),
              "on_user": ("drain", False, "on_user"), "cc_rx_ready_fiqsr": ("fiq", True, "fiq"),
              "spinn_binding_poll": (POLL, False, "poll"),
              "soft_int_isr": ("event", True, "soft_int"), "dispatch_once": ("event", True, "dispatch"),
              # paid once per user event, whoever calls it (the FIQ's phase resumes on return)
              "spin1_trigger_user_event": ("event", False, "trigger")}
    for lo, _, fn in funcs:
        base = fn.split(".")[0]
        if base in wanted:
            roots[lo] = wanted[base]
        elif base == "spinn_binding_send":
            roots[lo] = ("send", False, "send")
        elif base in ("spinn_binding_send_as", "spinn_binding_send_lost"):  # if not inlined
            roots[lo] = ("send", False, base)
    missing = [f for f in wanted if not any(s.split(".")[0] == f for s in symbols.values())]
    if missing:
        raise RuntimeError(f"{name}: functions not found: {missing}")
    if not any(r[0] == "send" for r in roots.values()):
        raise RuntimeError(f"{name}: the binding's send function is not a function of its own")
    return Build(exe, ranges, insns, roots, symbols)


# ---------------------------------------------------------------------------
# Trace and cost

@dataclass
class CaseResult:
    cycles: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES + ("setup", POLL), 0))
    instructions: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES + ("setup", POLL), 0))
    entries: Dict[str, int] = field(default_factory=dict)
    counters: Dict[str, int] = field(default_factory=dict)
    classes: Dict[str, int] = field(default_factory=dict)


def _trace_records(lines: Iterable[str]) -> Iterator[Tuple[int, int]]:
    """(pc, NZCV) before each logged instruction of a 'qemu -d cpu' log."""
    pc = -1
    for line in lines:
        if line.startswith("R12="):
            pc = int(line[-9:-1] if line.endswith("\n") else line[-8:], 16)
        elif line.startswith("PSR="):
            yield pc, int(line[4], 16)


def cost_trace(build: Build, records: Iterable[Tuple[int, int]], result: CaseResult) -> None:
    decoded: Dict[int, Insn] = {}
    costing = Costing()
    cycles, instructions, classes = result.cycles, result.instructions, result.classes
    entries: Dict[str, int] = {}
    roots, insns = build.roots, build.insns
    phase = "setup"
    stack: List[Tuple[int, str]] = []
    prev_pc, prev_jumped, prev_call = -1, True, False
    for pc, flags in records:
        # the log must hold every executed instruction of the measured code: straight-line
        # code continues at pc + 4, and a call does not come back without its callee traced
        if (not prev_jumped and pc != prev_pc + 4) or (prev_call and pc == prev_pc + 4):
            raise CostError(f"trace gap after {prev_pc:#x} ({_function_at(build, prev_pc)}): next {pc:#x} "
                            f"({_function_at(build, pc)})" + (" - a call into code not traced" if prev_call else ""))
        if stack and pc == stack[-1][0]:
            phase = stack.pop()[1]
        root = roots.get(pc)
        if root is not None:
            if root[1]:
                stack.clear()
            phase = root[0]
            entries[root[2]] = entries.get(root[2], 0) + 1
        ins = decoded.get(pc)
        if ins is None:
            if pc not in insns:
                raise CostError(f"executed address {pc:#x} is not a decoded instruction of the measured code")
            try:
                ins = decoded[pc] = decode(insns[pc])
            except CostError as e:
                raise CostError(f"{e} at {pc:#x} in {_function_at(build, pc)}") from None
        n, executed = costing.step(ins, flags)
        cycles[phase] += n
        instructions[phase] += 1
        key = ins.cls if executed else "cond_failed"
        classes[key] = classes.get(key, 0) + 1
        if executed and ins.call:
            stack.append((pc + 4, phase))
        prev_pc, prev_jumped, prev_call = pc, executed and ins.writes_pc, executed and ins.call
    result.entries = entries


def _function_at(build: Build, pc: int) -> str:
    best = max((a for a in build.symbols if a <= pc), default=None)
    return f"{build.symbols[best]}+{pc - best:#x}" if best is not None else "?"


def _one_insn_option() -> str:
    """qemu 8.1 renamed -singlestep (one instruction per translation block)."""
    try:
        usage = subprocess.run([QEMU[0], "-h"], capture_output=True, text=True).stdout
    except OSError:
        return "-singlestep"
    return "-one-insn-per-tb" if "-one-insn-per-tb" in usage else "-singlestep"


def _dfilter(ranges: Sequence[Tuple[int, int]]) -> str:
    return ",".join(f"{lo:#x}..{hi - 1:#x}" for lo, hi in ranges)


def run_case(build: Build, case_file: Path, trace: Optional[Path]) -> CaseResult:
    """One case under qemu with the measured functions traced; the log is costed as it
    streams in (qemu writes it to its stdout; the harness writes its counters to a file),
    or written to `trace` and costed from there."""
    result = CaseResult()
    out_file = case_file.with_suffix(".out")
    cmd = QEMU + [_one_insn_option(), "-d", "cpu,nochain", "-dfilter", _dfilter(build.ranges),
                  "-D", str(trace) if trace is not None else "/dev/stdout", str(build.exe), str(case_file),
                  str(out_file)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1 << 20) as proc:
        try:
            if trace is None:
                cost_trace(build, _trace_records(proc.stdout), result)
            else:
                proc.stdout.read()
            err = proc.stderr.read()
            proc.wait()
        except BaseException:
            proc.kill()
            raise
    if trace is not None and proc.returncode == 0:
        with open(trace, "r") as f:
            cost_trace(build, _trace_records(f), result)
    out = out_file.read_text() if out_file.exists() else ""
    if proc.returncode != 0 or not out.startswith("prov"):
        raise RuntimeError(f"harness failed ({proc.returncode}) on {case_file}:\n{out}{err}")
    words = [int(v) for v in out.split()[1:]]
    result.counters = dict(zip(PROVENANCE_NAMES, words))
    return result


# ---------------------------------------------------------------------------
# Cases: the project's encoders, fixed shapes

@dataclass
class Case:
    kind: str  # report row
    kernel: str  # c_runtime/kernels/<kernel>.c
    shape: str
    config: List[int]
    packets: List[Tuple[int, int]]
    # packets whose FIQs come before the user event they raise runs: 1, a core that keeps up
    # (a user event a packet); more, a stream (the drain takes several packets an event)
    burst: int = 1


M32 = 0xFFFFFFFF
MAX_BURST = 64  # a quarter of the binding's receive ring (SPINN_RX_QUEUE)
N_SLOTS = 4  # tvm_spinn.tiling.resources.N_SLOTS


def _encoders():
    os.environ.setdefault("TVM_SPINN_LIGHT_IMPORT", "1")  # the encoders without TVM
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import numpy as np  # noqa: F401

    from tvm_spinn.graph import windows
    from tvm_spinn.machine.configs import dense, tensor
    from tvm_spinn.tiling.dense import accumulation_block
    return dense, tensor, windows, accumulation_block


def _bits(n: int) -> int:
    return max(n - 1, 0).bit_length()


def dense_tile_case(kind: str, rows: int, cols: int, samples: int, wide: bool, seed: int) -> Case:
    """A final dense tile (relu) as builder.py writes it, fed by one producer of its columns."""
    import numpy as np
    dense, _, _, accumulation_block = _encoders()
    rng = np.random.default_rng(seed)
    w = np.clip(rng.normal(0, 1000, size=(rows, cols)), -32767, 32767).astype(np.int16)
    block = 2 if wide else accumulation_block(w)
    if not wide and block <= 2:
        raise ValueError("int32-block case got a block of 2")
    shift = _bits((rows + 1) // 2)
    in_shift = _bits((cols + 1) // 2)
    base = 1 << 20
    header = [dense.KIND_DENSE_TILE, dense.TILE_FINAL, rows, cols, block, 7 << 24, shift, 1, 0, N_SLOTS, 1]
    rx = [base, M32 & ~((16 << in_shift) - 1), in_shift, 0, cols]
    body = np.concatenate([dense.pack_int16(w),
                           dense.row_params(rng.integers(-(1 << 30), 1 << 30, rows),
                                            rng.integers(1, 1 << 15, rows), rng.integers(10, 30, rows)),
                           dense.table_words("relu")])
    cfg = header + rx + [int(v) for v in body]
    packets = []
    for s in range(samples):  # the producer's pairs of int16 values, one per key
        words = dense.pack_int16(rng.integers(-32768, 32768, size=cols))
        packets += [(base | (s % N_SLOTS) << in_shift | j, int(v)) for j, v in enumerate(words)]
    return Case(kind, "dense_tile", f"{rows}x{cols} block {block}", cfg, packets)


def dense_reduce_case(rows: int, groups: int, samples: int, seed: int) -> Case:
    import numpy as np
    dense, _, _, _ = _encoders()
    rng = np.random.default_rng(seed)
    shift = _bits(rows)
    rx = []
    for g in range(groups):
        rx += [(g + 1) << 20, M32 & ~((16 << shift) - 1), shift, 0, rows]
    header = [dense.KIND_DENSE_REDUCE, rows, groups, 7 << 24, _bits((rows + 1) // 2), 1, 8, N_SLOTS, groups]
    body = np.concatenate([dense.row_params(rng.integers(-(1 << 30), 1 << 30, rows), rng.integers(1, 1 << 12, rows),
                                            rng.integers(10, 30, rows)), dense.table_words("relu")])
    cfg = header + rx + [int(v) for v in body]
    packets = [((g + 1) << 20 | (s % N_SLOTS) << shift | r, int(rng.integers(-(1 << 28), 1 << 28)) & M32)
               for s in range(samples) for g in range(groups) for r in range(rows)]
    return Case("dense_reduce", "dense_reduce", f"{rows} rows x {groups} groups", cfg, packets)


class _Producer:
    """Channels [c0, c0 + C) x H x W of a tensor from one core (key index << 24), block key
    layout, sent as every producer sends (the tensor kernels' computes, the live inputs):
    a row of each channel in turn, then the next row."""

    def __init__(self, tc, index: int, shape: Tuple[int, int, int], c0: int = 0) -> None:
        self.shape, self.c0 = shape, c0
        self.shifts = tc.block_key_layout(*shape)
        self.key = index << 24
        self.mask = ~(tc.block_n_keys(self.shifts[0], tc.MAX_SLOTS) - 1) & M32

    def entry(self, tc, c0: int, nc: int, h0: int, nh: int, buffer: int = 0) -> List[int]:
        w = self.shape[2]
        return tc.trx_entry(self.key, self.mask, *self.shifts, self.c0, 0, 0, w, c0, h0, 0, nc, nh, w, buffer)

    def packets(self, x, slot: int) -> List[Tuple[int, int]]:
        """Of x, the whole tensor's sample: this block's channels."""
        s, cs, hs = self.shifts
        C, H, W = self.shape
        out = []
        for h in range(H):
            for c in range(C):
                row = [int(v) & 0xFFFF for v in x[self.c0 + c, h]] + ([0] if W & 1 else [])
                out += [(self.key | slot << s | c << cs | h << hs | i, row[2 * i] | row[2 * i + 1] << 16)
                        for i in range(len(row) // 2)]
        return out


def _producers(tc, c: int, size: int, k: int, first_index: int = 1) -> List[_Producer]:
    """The (c, size, size) tensor from k producers of channel groups (k <= c)."""
    bounds = [i * c // k for i in range(k + 1)]
    return [_Producer(tc, first_index + i, (bounds[i + 1] - bounds[i], size, size), bounds[i]) for i in range(k)]


def _in_turn(streams: Sequence[List[Tuple[int, int]]], rng=None) -> List[Tuple[int, int]]:
    """Packets of producers sending at once: one of each in turn (round robin), the turns in
    an order rng shuffles (not the receive table's, which the receive's guess of the next
    producer would take every time)."""
    if rng is not None:
        streams = [streams[i] for i in rng.permutation(len(streams))]
    out: List[Tuple[int, int]] = []
    for j in range(max(len(p) for p in streams)):
        out += [p[j] for p in streams if j < len(p)]
    return out


W_ABS = 32767  # full-range int16 weights, as the quantiser makes them (per-channel scale)


def conv_case(kind: str, c_in: int, size: int, c_out: int, depthwise: bool, samples: int, seed: int,
              producers: int = 1) -> Case:
    """A final conv tile (3x3, stride 1, padding 1, relu) of all output rows and channels, its
    input from `producers` cores of channel groups sending at once."""
    import numpy as np
    _, tc, windows, _ = _encoders()
    rng = np.random.default_rng(seed)
    k, H = 3, size
    OH = windows.window_output_size(H, k, 1, 1, 1)
    n_oc = c_in if depthwise else c_out
    ic0, n_ic = tc.depthwise_inputs(0, n_oc, 1) if depthwise else (0, c_in)
    ih0, n_ih = windows.window_input_rows(0, OH, 1, 1, k, H)
    srcs = _producers(tc, c_in, H, producers)
    out = tc.block_key_layout(n_oc, OH, OH)
    w = rng.integers(-W_ABS, W_ABS + 1, size=(n_oc, 1 if depthwise else n_ic, k, k))
    cfg, _ = tc.conv_config(n_ic=n_ic, in_h=H, in_w=H, ic0=ic0, ih0=ih0, n_ih=n_ih, oc0=0, oh0=0, n_oh=OH,
                            out_w=OH, sh=1, sw=1, pad_top=1, pad_left=1, depthwise=1 if depthwise else 0,
                            activation="relu", n_slots=N_SLOTS, out_slot_shift=out[0], out_c_shift=out[1],
                            out_h_shift=out[2], rx=[s.entry(tc, ic0, n_ic, ih0, n_ih) for s in srcs], weights=w,
                            bias=rng.integers(-(1 << 28), 1 << 28, size=n_oc),
                            multiplier=rng.integers(1, 1 << 20, size=n_oc), shift=rng.integers(24, 41, size=n_oc),
                            out_key=7 << 28)
    packets = []
    for s in range(samples):
        x = rng.integers(-32768, 32768, size=(c_in, H, H))
        packets += _in_turn([p.packets(x, s % N_SLOTS) for p in srcs], rng)
    what = f"{c_in}x{H}x{H} -> {n_oc}x{OH}x{OH}, 3x3" + (" depthwise" if depthwise else "") + _from(producers)
    return Case(kind, "conv_tile", what, [int(v) for v in cfg], packets)


def _from(producers: int) -> str:
    return f", {producers} producers at once" if producers > 1 else ""


def pool_case(c: int, size: int, samples: int, seed: int, producers: int = 1) -> Case:
    """A 2x2 stride-2 max pool tile of all channels and rows (input: as conv_case)."""
    import numpy as np
    _, tc, windows, _ = _encoders()
    rng = np.random.default_rng(seed)
    OH = windows.window_output_size(size, 2, 2, 0, 0)
    srcs = _producers(tc, c, size, producers)
    out = tc.block_key_layout(c, OH, OH)
    cfg, _ = tc.pool_config(n_c=c, in_h=size, in_w=size, c0=0, ih0=0, n_ih=size, oh0=0, n_oh=OH, out_w=OH, kh=2,
                            kw=2, sh=2, sw=2, pad_top=0, pad_left=0, pad_bottom=0, pad_right=0, mode="max",
                            count_include_pad=False, n_slots=N_SLOTS, out_slot_shift=out[0], out_c_shift=out[1],
                            out_h_shift=out[2], rx=[s.entry(tc, 0, c, 0, size) for s in srcs], out_key=7 << 28)
    packets = []
    for s in range(samples):
        x = rng.integers(-32768, 32768, size=(c, size, size))
        packets += _in_turn([p.packets(x, s % N_SLOTS) for p in srcs], rng)
    return Case("pool_tile", "pool_tile", f"{c}x{size}x{size} max 2x2/2" + _from(producers), [int(v) for v in cfg],
                packets)


def add_case(c: int, size: int, samples: int, seed: int, producers: int = 1) -> Case:
    """A residual add tile (relu) of two whole tensors, each from `producers` cores (all
    sending at once when more than one; else a's packets, then b's)."""
    import numpy as np
    _, tc, _, _ = _encoders()
    rng = np.random.default_rng(seed)
    a, b = _producers(tc, c, size, producers, 1), _producers(tc, c, size, producers, 1 + producers)
    out = tc.block_key_layout(c, size, size)
    cfg, _ = tc.add_config(c0=0, n_c=c, h=size, w=size, h0=0, n_h=size, activation="relu", mult_a=1 << 30,
                           mult_b=3 << 28, shift=30, n_slots=N_SLOTS, out_slot_shift=out[0], out_c_shift=out[1],
                           out_h_shift=out[2],
                           rx=[p.entry(tc, 0, c, 0, size, 0) for p in a] + [p.entry(tc, 0, c, 0, size, 1) for p in b],
                           out_key=7 << 28)
    packets = []
    for s in range(samples):
        xa, xb = (rng.integers(-32768, 32768, size=(c, size, size)) for _ in range(2))
        streams = [p.packets(xa, s % N_SLOTS) for p in a] + [p.packets(xb, s % N_SLOTS) for p in b]
        packets += _in_turn(streams, rng) if producers > 1 else [k for st in streams for k in st]
    return Case("add_tile", "add_tile", f"2 x {c}x{size}x{size}" + _from(producers), [int(v) for v in cfg], packets)


def conv_reduce_case(n_oc: int, size: int, groups: int, samples: int, seed: int) -> Case:
    """A conv reduce tile adding the partial sums of `groups` input-channel groups."""
    import numpy as np
    _, tc, _, _ = _encoders()
    rng = np.random.default_rng(seed)
    s_, cs, hs = tc.partial_key_layout(n_oc, size, size)
    out = tc.block_key_layout(n_oc, size, size)
    keys = [(g + 1) << 24 for g in range(groups)]
    mask = ~(tc.block_n_keys(s_, tc.MAX_SLOTS) - 1) & M32
    cfg, fixups = tc.conv_reduce_config(
        oc0=0, n_oc=n_oc, oh0=0, n_oh=size, out_w=size, n_groups=groups, partial_shift=4, activation="relu",
        n_slots=N_SLOTS, in_slot_shift=s_, in_c_shift=cs, in_h_shift=hs, out_slot_shift=out[0], out_c_shift=out[1],
        out_h_shift=out[2], n_rx=groups, bias=rng.integers(-(1 << 30), 1 << 30, size=n_oc),
        multiplier=rng.integers(1, 1 << 20, size=n_oc), shift=rng.integers(20, 41, size=n_oc), out_key=7 << 28)
    cfg = [int(v) for v in cfg]
    for word, what, ref in fixups:
        if ref != "self":
            cfg[word] = keys[ref] if what == "key" else mask
    bound = (1 << 30) // groups - 1
    packets = []
    for s in range(samples):
        v = rng.integers(-bound, bound + 1, size=(groups, n_oc, size, size))
        packets += [(keys[g] | (s % N_SLOTS) << s_ | c << cs | h << hs | x, int(v[g, c, h, x]) & M32)
                    for g in range(groups) for c in range(n_oc) for h in range(size) for x in range(size)]
    return Case("conv_reduce", "conv_reduce", f"{groups} groups x {n_oc}x{size}x{size}", cfg, packets)


KINDS = ("dense_tile_i32", "dense_tile_i64", "dense_reduce", "conv_tile", "conv_tile_depthwise", "pool_tile",
         "add_tile", "conv_reduce")


def cases(quick: bool) -> List[Case]:
    """One small case per kind (quick), or representative tiles (a few samples each)."""
    if quick:
        return [
            dense_tile_case("dense_tile_i32", 16, 32, 1, False, 1),
            dense_tile_case("dense_tile_i64", 16, 32, 1, True, 2),
            dense_reduce_case(16, 2, 1, 3),
            conv_case("conv_tile", 2, 6, 4, False, 1, 4),
            conv_case("conv_tile_depthwise", 4, 6, 4, True, 1, 5),
            pool_case(2, 8, 1, 6),
            add_case(2, 6, 1, 7),
            conv_reduce_case(2, 6, 2, 1, 8),
        ]
    return [
        dense_tile_case("dense_tile_i32", 32, 64, 2, False, 11),
        dense_tile_case("dense_tile_i32", 16, 400, 2, False, 12),
        dense_tile_case("dense_tile_i64", 32, 64, 2, True, 13),
        dense_tile_case("dense_tile_i64", 16, 400, 2, True, 14),
        dense_reduce_case(32, 2, 2, 15),
        dense_reduce_case(64, 4, 2, 16),
        conv_case("conv_tile", 8, 8, 8, False, 2, 17),
        conv_case("conv_tile", 16, 10, 16, False, 1, 18),
        conv_case("conv_tile_depthwise", 16, 10, 16, True, 2, 19),
        pool_case(8, 16, 2, 20),
        add_case(8, 8, 2, 21),
        conv_reduce_case(8, 8, 3, 2, 22),
    ]


def write_case(path: Path, case: Case) -> None:
    words = [len(case.config)] + [w & M32 for w in case.config] + [case.burst, len(case.packets)]
    words += [v & M32 for kp in case.packets for v in kp]
    path.write_text("\n".join(f"{w:x}" for w in words) + "\n")


# ---------------------------------------------------------------------------
# Report

def _per(num: float, den: float) -> Optional[float]:
    return num / den if den else None


def figures(items: List[Tuple[Case, CaseResult]]) -> dict:
    """Cycles and instructions per unit of work over some cases (one kind)."""
    cyc = dict.fromkeys(PHASES, 0)
    ins = dict.fromkeys(PHASES, 0)
    cnt: Dict[str, int] = {}
    entries: Dict[str, int] = {}
    classes: Dict[str, int] = {}
    for _, r in items:
        for p in PHASES:
            cyc[p] += r.cycles[p]
            ins[p] += r.instructions[p]
        for k, v in r.counters.items():
            cnt[k] = cnt.get(k, 0) + v
        for k, v in r.entries.items():
            entries[k] = entries.get(k, 0) + v
        for k, v in r.classes.items():
            classes[k] = classes.get(k, 0) + v
    n_fiq, n_soft = entries.get("fiq", 0), entries.get("soft_int", 0)
    # packets on the receive's general (longer) path, as the kernel counts them
    starts = cnt.get("rx_general", 0)
    # packets whose receive entry was looked up (not the last packet's row), and the entries compared
    lookups, scanned = cnt.get("rx_lookups", 0), cnt.get("rx_scanned", 0)
    cyc["fiq"] += FIQ_ENTRY_CYCLES * n_fiq  # the exception entries, not in the trace
    cyc["event"] += IRQ_ENTRY_CYCLES * n_soft
    macs = cnt.get("macs_lo", 0) + (cnt.get("macs_hi", 0) << 32)
    n_in, n_out, outputs = cnt.get("packets_in", 0), cnt.get("packets_out", 0), cnt.get("outputs", 0)
    n_compute = entries.get("compute", 0)
    if n_fiq != n_in or entries.get("send", 0) != n_out:
        raise RuntimeError(f"traced entries {entries} disagree with the kernel's counters {cnt}")
    total = sum(cyc.values())
    packet_in = sum(cyc[p] for p in PACKET_IN_PHASES)
    return {
        "cycles": cyc, "instructions": ins, "cycles_total": total,
        "counts": {"macs": macs, "outputs": outputs, "packets_in": n_in, "packets_out": n_out,
                   "compute_events": n_compute, "fiq": n_fiq, "user_events": n_soft, "starts": starts,
                   "lookups": lookups, "scanned": scanned,
                   "blocks": cnt.get("blocks", 0),
                   "computes": cnt.get("computes", 0)},
        "cycles_per": {
            "mac": _per(cyc["compute"], macs),
            "mac_all_in": _per(total, macs),
            "output": _per(cyc["compute"], outputs),
            "packet_in": _per(packet_in, n_in),
            "packet_in_without_event": _per(packet_in - cyc["event"], n_in),
            "packet_out": _per(cyc["send"], n_out),
            "compute_event": _per(cyc["compute"], n_compute),
        },
        "cycles_per_packet_in_by_phase": {p: _per(cyc[p], n_in) for p in PACKET_IN_PHASES},
        # a drain's whole wait for a next packet that does not come (none does in these traces)
        "poll_window_cycles": _per(sum(r.cycles[POLL] for _, r in items), entries.get("poll", 0)),
        "instructions_per": {
            "mac": _per(ins["compute"], macs),
            "output": _per(ins["compute"], outputs),
            "packet_in": _per(sum(ins[p] for p in PACKET_IN_PHASES), n_in),
            "packet_out": _per(ins["send"], n_out),
            "compute_event": _per(ins["compute"], n_compute),
        },
        "instruction_classes": dict(sorted(classes.items(), key=lambda kv: -kv[1])),
    }


def model_cycles(kind: str, counts: dict) -> float:
    """What tvm_spinn's calibrated cycle model (tiling.cycle_model, the constants the planner,
    the statistics and the timed emulation use) says the counted work costs, with the user
    events the trace has."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tvm_spinn.tiling import cycle_model

    return cycle_model.cost(kind).cycles(
        macs=counts["macs"], blocks=counts["blocks"], outputs=counts["outputs"], packets_in=counts["packets_in"],
        packets_out=counts["packets_out"], computes=counts["computes"], events=counts["user_events"],
        starts=counts["starts"], lookups=counts["lookups"], scanned=counts["scanned"])


def summarise(items: List[Tuple[Case, CaseResult]]) -> dict:
    out = figures(items)
    out["model_cycles"] = model_cycles(items[0][0].kind, out["counts"])
    out["trace_over_model"] = out["cycles_total"] / out["model_cycles"] if out["model_cycles"] else None
    out["cases"] = []
    for c, r in items:
        f = figures([(c, r)])
        out["cases"].append({"shape": c.shape, "packets": len(c.packets), "config_words": len(c.config),
                             "counts": f["counts"], "cycles_per": f["cycles_per"]})
    return out


def _fmt(v: Optional[float], width: int = 8) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.1f}"


def table(report: dict) -> str:
    head = (f"{'kind':<20} {'cyc/MAC':>8} {'all-in':>8} {'cyc/out':>8} {'cyc/pkt in':>10} {'(no event)':>10} "
            f"{'cyc/pkt out':>11} {'cyc/compute':>11}   {'ins/MAC':>7} {'ins/pkt in':>10} {'ins/compute':>11}")
    lines = [head, "-" * len(head)]
    for kind, k in report["kinds"].items():
        c, i = k["cycles_per"], k["instructions_per"]
        lines.append(f"{kind:<20} {_fmt(c['mac'])} {_fmt(c['mac_all_in'])} {_fmt(c['output'])} "
                     f"{_fmt(c['packet_in'], 10)} {_fmt(c['packet_in_without_event'], 10)} "
                     f"{_fmt(c['packet_out'], 11)} {_fmt(c['compute_event'], 11)}   "
                     f"{_fmt(i['mac'], 7)} {_fmt(i['packet_in'], 10)} {_fmt(i['compute_event'], 11)}")
    lines.append("")
    lines.append(f"{'per case':<54} {'cyc/MAC':>8} {'cyc/out':>8} {'cyc/compute':>11}")
    for kind, k in report["kinds"].items():
        for case in k["cases"]:
            c = case["cycles_per"]
            lines.append(f"  {kind + ' ' + case['shape']:<52} {_fmt(c['mac'])} {_fmt(c['output'])} "
                         f"{_fmt(c['compute_event'], 11)}")
    lines.append("")
    lines.append(f"{'all work of the cases':<20} {'traced':>12} {'model':>12} {'trace/model':>11}")
    for kind, k in report["kinds"].items():
        lines.append(f"  {kind:<18} {k['cycles_total']:>12,.0f} {k['model_cycles']:>12,.0f} "
                     f"{_fmt(k['trace_over_model'], 11)}")
    lines.append("")
    lines.append("cycles per packet in, by phase (fiq / event / drain / receive):")
    for kind, k in report["kinds"].items():
        ph = k["cycles_per_packet_in_by_phase"]
        lines.append(f"  {kind:<20} " + " / ".join(_fmt(ph[p], 5).strip() for p in PACKET_IN_PHASES))
    lines.append("")
    lines.append("cyc/MAC, cyc/out, cyc/compute: the kernel's compute call, sends excluded; all-in: every phase "
                 "per MAC.")
    lines.append(f"cyc/pkt in: FIQ entry to the end of receive, with a user event (spin1 scheduling) per "
                 f"{report.get('burst', 1)} packet(s); (no event): the event phase amortised away.")
    lines.append("cyc/pkt out: the binding's send with spin1_send_mc_packet (queue empty, TX not full).")
    polls = [k["poll_window_cycles"] for k in report["kinds"].values() if k.get("poll_window_cycles")]
    if polls:
        lines.append(f"drain's wait for a next packet (spinn_binding_poll, not in the figures above): "
                     f"{max(polls):.0f} cycles when none comes.")
    lines.append("model: tvm_spinn's calibrated cycle model (tiling/cycle_model.py, tools/calibrate_cycles.py) on "
                 "the same counted work; trace/model > 1: the model is optimistic.")
    return "\n".join(lines)


def _tool_version(cmd: Sequence[str]) -> str:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "?"


def trace_cases(selected: Sequence[Case], opt: Sequence[str] = DEFAULT_OPT, keep: Optional[Path] = None,
                jobs: Optional[int] = None, log=print, cc: str = CC) -> List[Tuple[Case, CaseResult]]:
    """Build the kernels the cases need and trace every case: (case, its costed trace)."""
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="arm_cycles_") as tmp:
        work = Path(keep) if keep is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        common = build_common(work)
        names = sorted({c.kernel for c in selected})
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
            builds = dict(zip(names, pool.map(lambda n: build_kind(work, n, common, opt, cc), names)))
        log(f"arm_cycles: built {len(builds)} kernels ({time.time() - t0:.1f} s)")
        files = []
        for i, c in enumerate(selected):
            f = work / f"case{i}_{c.kind}.txt"
            write_case(f, c)
            files.append(f)
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
            futures = [pool.submit(run_case, builds[c.kernel], f,
                                   (work / f"case{i}_{c.kind}.trace") if keep is not None else None)
                       for i, (c, f) in enumerate(zip(selected, files))]
            results = [fu.result() for fu in futures]
    for c, r in zip(selected, results):
        if r.counters.get("dropped") or r.counters.get("rx_overflow") or r.counters.get("send_failed"):
            raise RuntimeError(f"{c.kind} {c.shape}: packets dropped or lost: {r.counters}")
    return list(zip(selected, results))


def measure(quick: bool, opt: Sequence[str], keep: Optional[Path] = None, jobs: Optional[int] = None,
            log=print, cc: str = CC, burst: int = 1) -> dict:
    t0 = time.time()
    items = trace_cases([dataclasses.replace(c, burst=burst) for c in cases(quick)], opt, keep, jobs, log, cc)
    by_kind: Dict[str, List[Tuple[Case, CaseResult]]] = {}
    for c, r in items:
        by_kind.setdefault(c.kind, []).append((c, r))
    return {
        "tool": "tools/arm_cycles.py",
        "quick": quick,
        "burst": burst,
        "compiler": _tool_version([cc, "--version"]),
        "qemu": _tool_version(["qemu-arm", "--version"]),
        "flags": _flags(opt),
        "seconds": round(time.time() - t0, 1),
        "kinds": {k: summarise(by_kind[k]) for k in KINDS if k in by_kind},
        "constants": {"fiq_entry_cycles": FIQ_ENTRY_CYCLES, "irq_entry_cycles": IRQ_ENTRY_CYCLES},
        "timing_table": {k: {"cycles": r.cycles, "latency": r.latency, "what": r.what, "source": r.source}
                         for k, r in TIMING.items()},
        "not_included": ["interrupt latency (the interrupted instruction finishing)", "spin1_wfi sleep and wake-up",
                         "comms controller / VIC wait states (costed as TCM)", "timer tick, SDP",
                         "several packets drained by one user event (a busy core): 'event' is paid per packet"],
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one small case per kind (CI)")
    ap.add_argument("--json", type=Path, help="write the table and details here")
    ap.add_argument("--flags", help="compiler flags instead of -Ofast (the target flags stay), e.g. --flags=-Os")
    ap.add_argument("--keep", type=Path, help="keep the build, cases and traces in this directory")
    ap.add_argument("--jobs", type=int, default=None, help="parallel builds and runs (default: CPUs)")
    ap.add_argument("--burst", type=int, default=1,
                    help="packets whose FIQs come before the user event they raise runs (default 1: a user "
                         "event a packet; e.g. 16: a stream, the drain taking several packets an event)")
    ap.add_argument("--cc", default=CC, help=f"compiler of the kernel and binding objects (default {CC}; "
                    "arm-none-eabi-gcc is the .aplx build's)")
    args = ap.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"arm_cycles: {', '.join(missing)} not found, skipped; install with:\n    {INSTALL_HINT}",
              file=sys.stderr)
        return 2
    opt = args.flags.split() if args.flags is not None else DEFAULT_OPT
    if not 1 <= args.burst <= MAX_BURST:
        print(f"arm_cycles: --burst {args.burst}: from 1 to {MAX_BURST} (the binding's ring holds "
              f"{MAX_BURST * 4} packets)", file=sys.stderr)
        return 1
    try:
        if shutil.which(args.cc) is None:
            print(f"arm_cycles: {args.cc} not found", file=sys.stderr)
            return 2
        report = measure(args.quick, opt, args.keep, args.jobs, cc=args.cc, burst=args.burst)
    except (CostError, RuntimeError, ValueError) as e:
        print(f"arm_cycles: {e}", file=sys.stderr)
        return 1
    print(f"ARM968E-S cycles ({' '.join(report['flags'])}; {report['compiler']}), "
          f"{'quick' if args.quick else 'full'} set, {args.burst} packet(s) a user event, {report['seconds']} s")
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
