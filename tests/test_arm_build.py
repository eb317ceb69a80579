"""The kernels and their spin1 bindings build for the ARM968 (tools/arm_build_check.py):
no soft float, no division, sizes within the ITCM budget; the host build is pedantic C99."""
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tvm_spinn.machine.graph import PROVENANCE_NAMES

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "arm_build_check.py"

needs_arm = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None,
    reason="arm-none-eabi-gcc not on PATH (apt-get install -y --no-install-recommends gcc-arm-none-eabi)",
)


def _tool():
    spec = importlib.util.spec_from_file_location("arm_build_check", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_arm
def test_arm_build_check(tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(TOOL), "--json", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["ok"]
    names = sorted(p.stem for p in (ROOT / "c_runtime" / "kernels").glob("*.c"))
    assert sorted(report["kernels"]) == names
    for name, k in report["kernels"].items():
        assert k["size"] > 0 and k["forbidden"] == [], name
        assert k["total"] <= report["itcm_budget"], name
    for name in names:  # every kernel runs on a core: each has its spin1 binding
        b = report["kernels"][name]["binding"]
        assert b is not None and b["size"] > 0 and b["forbidden"] == [] and b["other_undefined"] == []
    assert report["host"] and all(report["host"].values())


@needs_arm
def test_forbidden_symbols_fail_the_check(tmp_path, monkeypatch):
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    (kernels / "bad.c").write_text(
        "#include <stdint.h>\n"
        "int32_t bad_div(int32_t a, int32_t b) { return a / b; }\n"
        "float bad_float(float x) { return x * 1.5f; }\n")
    tool = _tool()
    monkeypatch.setattr(tool, "KERNELS", kernels)
    report = tool.check(tmp_path)
    assert not report["ok"]
    assert {"__aeabi_idiv", "__aeabi_fmul"} <= set(report["kernels"]["bad"]["forbidden"])


def test_budget_comes_from_resources_without_tvm():
    code = ("import sys, importlib.util as u\n"
            f"s = u.spec_from_file_location('abc', {str(TOOL)!r}); m = u.module_from_spec(s)\n"
            "s.loader.exec_module(m)\n"
            "print(m.itcm_budget()); assert 'tvm' not in sys.modules and 'tvm_spinn' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    from tvm_spinn.tiling import resources as res
    assert int(proc.stdout) == res.ITCM_BYTES - res.ITCM_RUNTIME_BYTES


QEMU_TOOL = ROOT / "tools" / "qemu_bitexact.py"


def test_kernels_bit_exact_on_armv5te_under_qemu():
    spec = importlib.util.spec_from_file_location("qemu_bitexact", QEMU_TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    missing = tool.missing_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not on PATH ({tool.INSTALL_HINT})")
    report = tool.compare(n_cases=200, seed=7, n_tensor_cases=150)
    assert report["equal"], report["first_difference"]
    assert report["init_failures"] == 0 and report["computes"] > 500 and report["packets_sent"] > 5000
    # every kind of case sent packets: dense tile / reduce, conv tile final / partial / with a
    # fused pool, pool, add, conv reduce
    by_kind = report["packets_sent_by_kind"]
    assert set(by_kind) == {"dense_tile", "dense_reduce", *tool.TENSOR_CASES}
    assert all(n > 200 for n in by_kind.values()), by_kind


# A stand-in for the spin1 runtime and front-end-common, to run a binding on the
# host: the data-spec regions hold the case's config, packets arrive through the
# registered FIQ callbacks (also in the middle of a compute, from inside a send),
# user events wait in a 4-entry queue and run at random moments, and sends fail
# at random (the binding must retry). Prints every packet the binding sends.
STUB_SDK = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include KERNEL_MAIN

static callback_t cb[8];
static int prio[8];
static uint uq[4][2], uq_head, uq_len, fiq_off, rng_state = 12345u;
static uint32_t *stream, n_stream, next_packet;
static uint32_t system_region[3] = {APPLICATION_NAME_HASH, 0u, 15u};
static uint32_t provenance_region[6 + SPINN_PROV_WORDS];
static struct { data_specification_metadata_t m; region_desc_t r[3]; } ds;
static prov_callback_t prov_fn;
static uint32_t drop_packet = 0xFFFFFFFFu; /* index of a stream packet lost on the way */
static uint32_t marker_packet = 0xFFFFFFFFu; /* index of a stream packet that comes as a lost-value marker */
static int burst; /* every send lets all the packets still to come in (the FIQs of a long compute) */

static uint rnd(uint n) { rng_state = rng_state * 1103515245u + 12345u; return (rng_state >> 16) % n; }
static void die(const char *why) { printf("STUB ERROR %s\n", why); exit(1); }

void spin1_callback_on(uint e, callback_t c, int p) { cb[e] = c; prio[e] = p; }
void spin1_callback_off(uint e) { cb[e] = NULL; }
void spin1_set_timer_tick(uint t) { if (t != 1000u) die("timer period"); }
uint spin1_trigger_user_event(uint a, uint b) {
    if (uq_len == 3u) return FAILURE; /* spin1's ring of 4 holds 3 */
    uq[(uq_head + uq_len) & 3u][0] = a; uq[(uq_head + uq_len) & 3u][1] = b; uq_len++;
    return SUCCESS;
}
static void deliver(void) { /* one packet through the FIQ handler */
    uint32_t i = next_packet++, k = stream[2u * i], p = stream[2u * i + 1u];
    if (fiq_off) die("FIQ while disabled");
    if (i == drop_packet) return;
    if (i == marker_packet) cb[MC_PACKET_RECEIVED](k, 0u);
    else cb[MCPL_PACKET_RECEIVED](k, p);
}
uint spin1_send_mc_packet(uint key, uint data, uint load) {
    if (burst) while (next_packet < n_stream) deliver();
    else if (next_packet < n_stream && rnd(5u) == 0u) deliver(); /* FIQ preempts the compute */
    if (rnd(3u) == 0u) return FAILURE;                       /* TX queue full */
    if (load == WITH_PAYLOAD) printf("%08x %08x\n", key, data);
    else printf("L %08x\n", key); /* a lost-value marker */
    return SUCCESS;
}
void *spin1_malloc(uint bytes) { return (char *)malloc(bytes + 4u) + 4u; } /* only word aligned, like sark */
void spin1_delay_us(uint n) { (void)n; }
uint spin1_fiq_disable(void) { fiq_off++; return 0u; }
void spin1_mode_restore(uint v) { (void)v; fiq_off--; }
void rt_error(uint code, ...) { printf("STUB ERROR rt_error %u\n", code); exit(1); }
/* front-end-common 7.4.1: verify, then zero every region's n_words and checksum */
data_specification_metadata_t *data_specification_get_data_address(void) {
    ds.r[0].n_words = ds.r[0].checksum = ds.r[1].n_words = ds.r[1].checksum = ds.r[2].n_words = 0u;
    return &ds.m;
}
bool data_specification_read_header(data_specification_metadata_t *d) { return d->magic_number == 0xAD130AD6u; }
void *data_specification_get_region(uint32_t region, data_specification_metadata_t *d) {
    return d->regions[region].pointer;
}
bool simulation_initialise(address_t a, uint32_t magic, uint32_t *t, uint32_t *s, uint32_t *i, uint32_t *n,
                           int sdp, int dma) {
    *t = 1000u; (void)s; (void)i; (void)n;
    return a[0] == magic && sdp >= 0 && dma < -1;
}
void simulation_set_provenance_function(prov_callback_t f, address_t a) {
    prov_fn = f;
    if (a != provenance_region) die("provenance region");
}
void simulation_set_exit_function(exit_callback_t f) { (void)f; }
static int pause_now;
bool simulation_is_finished(void) { return pause_now; }
void simulation_handle_pause_resume(resume_callback_t r) { (void)r; prov_fn(provenance_region + 6); }
void simulation_ready_to_read(void) { pause_now = 2; }
static void run_user_event(void) {
    uint a = uq[uq_head][0], b = uq[uq_head][1];
    uq_head = (uq_head + 1u) & 3u; uq_len--;
    cb[USER_EVENT](a, b);
}
void simulation_run(void) {
    uint32_t i;
    if (prio[MC_PACKET_RECEIVED] != -1 || prio[MCPL_PACKET_RECEIVED] != -1 || prio[USER_EVENT] != 1 ||
        prio[TIMER_TICK] != 2) die("priorities");
    cb[MC_PACKET_RECEIVED](0xFFFFFFFFu, 0u); /* a marker no entry matches: dropped */
    while (burst && (next_packet < n_stream || uq_len)) { /* a packet at a time, each drained */
        if (uq_len) run_user_event();
        else deliver();
    }
    while (next_packet < n_stream || uq_len) {
        uint r = rnd(8u);
        if (r == 0u && rnd(32u) == 0u) cb[TIMER_TICK](0u, 0u); /* a few ticks while packets flow: no release */
        else if (next_packet < n_stream && (uq_len == 0u || r > 2u)) deliver();
        else if (uq_len) run_user_event();
    }
    for (i = 0; i < 40u; i++) { /* quiet: past the lost timeout, then drain what that sent */
        cb[TIMER_TICK](0u, 0u);
        while (uq_len) run_user_event();
    }
    pause_now = 1; /* the host's pause: provenance, READY */
    cb[TIMER_TICK](0u, 0u);
    if (pause_now != 2) die("no READY after pause");
    printf("prov");
    for (i = 0; i < SPINN_PROV_WORDS; i++) printf(" %u", provenance_region[6 + i]);
    printf("\nerrors %u %u %u pending %u queued %u\n", core.b.rx_overflow, core.b.send_failed,
           core.b.compute_failed, core.b.event_pending, core.b.q_tail - core.b.q_head);
}

int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "r");
    unsigned long kind, n, v, i;
    uint32_t *cfg, sum = 0u;
    rng_state = (uint)strtoul(argv[2], NULL, 10);
    if (argc > 3) drop_packet = (uint32_t)strtoul(argv[3], NULL, 10);
    if (argc > 4) marker_packet = (uint32_t)strtoul(argv[4], NULL, 10);
    if (argc > 5) burst = atoi(argv[5]);
    if (!f || fscanf(f, "%lx %lx", &kind, &n) != 2) die("input");
    cfg = malloc(4u * (n + 5u)); /* the region: n_words, checksum, lost timeout, lost bit, send gap, the config */
    for (i = 0; i < n; i++) { if (fscanf(f, "%lx", &v) != 1) die("input"); cfg[5u + i] = (uint32_t)v; sum += (uint32_t)v; }
    cfg[0] = (uint32_t)n; cfg[1] = sum; cfg[2] = 20u; cfg[3] = 0u; cfg[4] = 0u; /* markers without payload, no gap */
    if (fscanf(f, "%lx", &v) != 1) die("input");
    n_stream = (uint32_t)v;
    stream = malloc(8u * (n_stream + 1u));
    for (i = 0; i < 2u * n_stream; i++) { if (fscanf(f, "%lx", &v) != 1) die("input"); stream[i] = (uint32_t)v; }
    ds.m.magic_number = 0xAD130AD6u;
    ds.r[0].pointer = system_region;
    ds.r[1].pointer = cfg; ds.r[1].n_words = (uint32_t)n + 5u; ds.r[1].checksum = sum + (uint32_t)n + sum + 20u;
    ds.r[2].pointer = provenance_region;
    c_main();
    return 0;
}
"""


DRIVER_KINDS = {1: "dense_tile", 2: "dense_reduce", 3: "conv_tile", 4: "pool_tile", 5: "add_tile", 6: "conv_reduce"}


def _stub_binding(gcc, tmp_path, name):
    """The kernel `name` with its binding on the stub runtime (STUB_SDK), built for the host:
    run as exe CASE_FILE SEED [DROP [MARKER [BURST]]] (packet indices; BURST 1: every send lets
    all the packets still to come in)."""
    stub = tmp_path / "stub.c"
    stub.write_text(STUB_SDK)
    flags = ["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
             f"-I{ROOT / 'c_runtime' / 'include'}", f"-I{ROOT / 'c_runtime' / 'spin1'}",
             "-DAPPLICATION_NAME_HASH=0x1234abcdu"]
    exe = tmp_path / f"stub_{name}"
    subprocess.run([gcc, *flags, f'-DKERNEL_MAIN="{name}_main.c"', str(stub),
                    str(ROOT / "c_runtime" / "kernels" / f"{name}.c"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    return exe


def test_binding_marker_taken_in_at_a_send_makes_the_rest_markers(tmp_path):
    """A marker that comes while its own slot computes (the binding's send takes queued
    packets in) makes the sample lost: the rows it completes, computed in that same compute
    from the marker's zeros, leave as markers, not as values. Add tile a + b of one channel,
    2 rows x 2 columns: a0 and b0 make row 0 due; at its send a1 and b1 (a marker) come in,
    completing row 1, which the running compute then sends."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no host gcc")
    from tvm_spinn.machine.configs import tensor as tc

    shifts = tc.block_key_layout(1, 2, 2)  # one channel, 2 rows of one pair
    mask = ~(tc.block_n_keys(shifts[0], 16) - 1) & 0xFFFFFFFF
    rx = [tc.trx_entry(i << 24, mask, *shifts, 0, 0, 0, 2, 0, 0, 0, 1, 2, 2, i - 1, 0) for i in (1, 2)]
    cfg, _ = tc.add_config(c0=0, n_c=1, h=2, w=2, h0=0, n_h=2, activation=0, act_params=None, mult_a=1,
                           mult_b=1, shift=0, n_slots=1, out_slot_shift=shifts[0], out_c_shift=shifts[1],
                           out_h_shift=shifts[2], rx=rx, out_key=0x10000000)
    row = lambda src, h, lo, hi: ((src << 24) | h << shifts[2], (hi & 0xFFFF) << 16 | (lo & 0xFFFF))
    packets = [row(1, 0, 1, 2), row(2, 0, 10, 20), row(1, 1, 3, 4), row(2, 1, 30, 40)]
    case = tmp_path / "case.txt"
    case.write_text(f"5 {len(cfg):x}\n" + " ".join(f"{int(w) & 0xFFFFFFFF:x}" for w in cfg)
                    + f"\n{len(packets):x}\n" + " ".join(f"{k:x} {p:x}" for k, p in packets) + "\n")
    exe = _stub_binding(gcc, tmp_path, "add_tile")
    key1 = 0x10000000 | 1 << shifts[2]
    for marker, sent_row1 in ((None, f"{key1:08x} 002c0021"), (3, f"L {key1:08x}")):
        args = [str(exe), str(case), "1", str(0xFFFFFFFF), str(0xFFFFFFFF if marker is None else marker), "1"]
        lines = subprocess.run(args, capture_output=True, text=True).stdout.splitlines()
        assert lines and lines[-1] == "errors 0 0 0 pending 0 queued 0", lines[-3:]
        sent = [l for l in lines if (len(l) == 17 and l[8] == " ") or l.startswith("L ")]
        assert sent == ["10000000 0016000b", sent_row1], (marker, sent)  # rows (11, 22), (33, 44) or lost
        prov = dict(zip(PROVENANCE_NAMES, map(int, lines[-2].split()[1:])))
        assert prov["lost_out"] == (marker is not None) and prov["released"] == 0, prov


def test_binding_on_host_with_stub_runtime(tmp_path):
    """The binding's event logic (the FIQ only queues, one drain at a time, send retries,
    packets arriving in the middle of a compute, timer ticks) delivers exactly the packets
    each kernel produces when driven directly: the dense kernels and the tensor kernels
    (conv tiles final, partial and with a fused pool, pool, add, conv reduce). With a
    packet lost on the way, the quiet timeout releases the sample and everything it still
    had to send leaves as lost-value markers, never as values. The pause stores provenance
    (the counts checked here) and signals READY."""
    import random

    spec = importlib.util.spec_from_file_location("qemu_bitexact", QEMU_TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no host gcc")
    exe = {name: _stub_binding(gcc, tmp_path, name) for name in DRIVER_KINDS.values()}
    driver = tmp_path / "driver"
    subprocess.run([gcc, "-std=c99", "-O1", f"-I{ROOT / 'c_runtime' / 'include'}", str(ROOT / tool.DRIVER),
                    *map(str, tool.KERNEL_SOURCES), "-o", str(driver)], check=True, capture_output=True, text=True)
    rng = random.Random(3)
    which = ["dense_tile", "dense_reduce"] * 20 + list(tool.TENSOR_CASES) * 6
    n_lost = 0
    for i, kind_of_case in enumerate(which):
        if kind_of_case == "dense_tile":
            kind, cfg, packets = tool.random_tile(rng, rounds=1)
        elif kind_of_case == "dense_reduce":
            kind, cfg, packets = tool.random_reduce(rng, rounds=1)
        else:
            kind, cfg, packets = tool.random_tensor_case(rng, kind_of_case, rounds=1)
        case = tmp_path / f"case{i}.txt"
        tool.write_cases(case, [(kind, cfg, packets)])
        direct = subprocess.run([str(driver), str(case)], capture_output=True, text=True, check=True).stdout
        assert direct.splitlines()[0].endswith("init=0"), (i, kind_of_case)
        expected = sorted(l for l in direct.splitlines() if len(l) == 17 and l[8] == " ")
        n_packets = len(packets)
        drop = rng.randrange(n_packets) if i % 3 == 2 else None  # a packet lost on the way
        out = subprocess.run([str(exe[DRIVER_KINDS[kind]]), str(case), str(i + 1)]
                             + ([str(drop)] if drop is not None else []), capture_output=True, text=True).stdout
        lines = out.splitlines()
        assert lines and lines[-1] == "errors 0 0 0 pending 0 queued 0", (i, lines[-3:])
        markers = sorted(l[2:] for l in lines if l.startswith("L "))
        prov = dict(zip(PROVENANCE_NAMES, map(int, lines[-2].split()[1:])))
        sent = sorted(l for l in lines if len(l) == 17 and l[8] == " ")
        received = n_packets + 1 - (drop is not None)
        assert prov["packets_in"] == received and prov["markers_in"] == 1 and prov["dropped"] >= 1, (i, prov)
        assert prov["packets_out"] == len(sent) + len(markers), (i, prov)
        if not markers:  # nothing lost (the dropped packet, if any, carried none of this core's values)
            assert sent == expected and prov["released"] == prov["lost_out"] == 0, (i, drop, prov)
        else:  # the sample was released after the quiet timeout: whatever it still had to send is marked lost
            assert drop is not None and prov["released"] == 1 and prov["lost_out"] == 1, (i, prov)
            n_lost += 1
            assert set(sent) <= set(expected), i
            assert sorted([l[:8] for l in sent] + markers) == sorted(l[:8] for l in expected), i
        assert expected, i
    assert n_lost >= len(which) // 6, n_lost  # most dropped packets did cost a sample
