"""The kernels and their spin1 bindings build for the ARM968 (tools/arm_build_check.py):
no soft float, no division, sizes within the ITCM budget; the host build is pedantic C99."""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
static struct { data_specification_metadata_t m; region_desc_t r[2]; } ds;

static uint rnd(uint n) { rng_state = rng_state * 1103515245u + 12345u; return (rng_state >> 16) % n; }
static void die(const char *why) { printf("STUB ERROR %s\n", why); exit(1); }

void spin1_callback_on(uint e, callback_t c, int p) { cb[e] = c; prio[e] = p; }
uint spin1_trigger_user_event(uint a, uint b) {
    if (uq_len == 3u) return FAILURE; /* spin1's ring of 4 holds 3 */
    uq[(uq_head + uq_len) & 3u][0] = a; uq[(uq_head + uq_len) & 3u][1] = b; uq_len++;
    return SUCCESS;
}
static void deliver(void) { /* one packet through the FIQ handler */
    uint32_t k = stream[2u * next_packet], p = stream[2u * next_packet + 1u];
    if (fiq_off) die("FIQ while disabled");
    next_packet++;
    cb[MCPL_PACKET_RECEIVED](k, p);
}
uint spin1_send_mc_packet(uint key, uint data, uint load) {
    if (load != WITH_PAYLOAD) die("send without payload");
    if (next_packet < n_stream && rnd(5u) == 0u) deliver(); /* FIQ preempts the compute */
    if (rnd(3u) == 0u) return FAILURE;                       /* TX queue full */
    printf("%08x %08x\n", key, data);
    return SUCCESS;
}
void *spin1_malloc(uint bytes) { return (char *)malloc(bytes + 4u) + 4u; } /* only word aligned, like sark */
void spin1_delay_us(uint n) { (void)n; }
uint spin1_fiq_disable(void) { fiq_off++; return 0u; }
void spin1_mode_restore(uint v) { (void)v; fiq_off--; }
void rt_error(uint code, ...) { printf("STUB ERROR rt_error %u\n", code); exit(1); }
/* front-end-common 7.4.1: verify, then zero every region's n_words and checksum */
data_specification_metadata_t *data_specification_get_data_address(void) {
    ds.r[0].n_words = ds.r[0].checksum = ds.r[1].n_words = ds.r[1].checksum = 0u;
    return &ds.m;
}
bool data_specification_read_header(data_specification_metadata_t *d) { return d->magic_number == 0xAD130AD6u; }
void *data_specification_get_region(uint32_t region, data_specification_metadata_t *d) {
    return d->regions[region].pointer;
}
bool simulation_initialise(address_t a, uint32_t magic, uint32_t *t, uint32_t *s, uint32_t *i, uint32_t *n,
                           int sdp, int dma) {
    (void)t; (void)s; (void)i; (void)n;
    return a[0] == magic && sdp >= 0 && dma < -1;
}
void simulation_set_uses_timer(bool u) { if (u) die("timer"); }
static void run_user_event(void) {
    uint a = uq[uq_head][0], b = uq[uq_head][1];
    uq_head = (uq_head + 1u) & 3u; uq_len--;
    cb[USER_EVENT](a, b);
}
void simulation_run(void) {
    if (prio[MC_PACKET_RECEIVED] != -1 || prio[MCPL_PACKET_RECEIVED] != -1 || prio[USER_EVENT] != 1) die("priorities");
    cb[MC_PACKET_RECEIVED](0xFFFFFFFFu, 0u);
    while (next_packet < n_stream || uq_len) {
        if (next_packet < n_stream && (uq_len == 0u || rnd(3u) != 0u)) deliver();
        else run_user_event();
    }
    printf("errors %u %u %u %u %u pending %u ready %u\n", core.b.no_payload, core.b.trigger_failed,
           core.b.queue_overflow, core.b.send_failed, core.b.compute_failed, core.b.event_pending, core.b.ready_len);
}

int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "r");
    unsigned long kind, n, v, i;
    uint32_t *cfg, sum = 0u;
    rng_state = (uint)strtoul(argv[2], NULL, 10);
    if (!f || fscanf(f, "%lx %lx", &kind, &n) != 2) die("input");
    cfg = malloc(4u * (n + 2u)); /* the region: n_words, checksum, then the config (frame_config) */
    for (i = 0; i < n; i++) { if (fscanf(f, "%lx", &v) != 1) die("input"); cfg[2u + i] = (uint32_t)v; sum += (uint32_t)v; }
    cfg[0] = (uint32_t)n; cfg[1] = sum;
    if (fscanf(f, "%lx", &v) != 1) die("input");
    n_stream = (uint32_t)v;
    stream = malloc(8u * (n_stream + 1u));
    for (i = 0; i < 2u * n_stream; i++) { if (fscanf(f, "%lx", &v) != 1) die("input"); stream[i] = (uint32_t)v; }
    ds.m.magic_number = 0xAD130AD6u;
    ds.r[0].pointer = system_region;
    ds.r[1].pointer = cfg; ds.r[1].n_words = (uint32_t)n + 2u; ds.r[1].checksum = sum + (uint32_t)n + sum;
    c_main();
    return 0;
}
"""


DRIVER_KINDS = {1: "dense_tile", 2: "dense_reduce", 3: "conv_tile", 4: "pool_tile", 5: "add_tile", 6: "conv_reduce"}


def test_binding_on_host_with_stub_runtime(tmp_path):
    """The binding's event logic (ready ring, one user event at a time, send retries,
    packets arriving in the middle of a compute) delivers exactly the packets each kernel
    produces when driven directly: the dense kernels and the tensor kernels (conv tiles
    final, partial and with a fused pool, pool, add, conv reduce)."""
    import random

    spec = importlib.util.spec_from_file_location("qemu_bitexact", QEMU_TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no host gcc")
    stub = tmp_path / "stub.c"
    stub.write_text(STUB_SDK)
    kernels = ROOT / "c_runtime" / "kernels"
    flags = ["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
             f"-I{ROOT / 'c_runtime' / 'include'}", f"-I{ROOT / 'c_runtime' / 'spin1'}",
             "-DAPPLICATION_NAME_HASH=0x1234abcdu"]
    exe = {}
    for name in DRIVER_KINDS.values():
        exe[name] = tmp_path / f"stub_{name}"
        subprocess.run([gcc, *flags, f'-DKERNEL_MAIN="{name}_main.c"', str(stub), str(kernels / f"{name}.c"),
                        "-o", str(exe[name])], check=True, capture_output=True, text=True)
    driver = tmp_path / "driver"
    subprocess.run([gcc, "-std=c99", "-O1", f"-I{ROOT / 'c_runtime' / 'include'}", str(ROOT / tool.DRIVER),
                    *map(str, tool.KERNEL_SOURCES), "-o", str(driver)], check=True, capture_output=True, text=True)
    rng = random.Random(3)
    which = ["dense_tile", "dense_reduce"] * 20 + list(tool.TENSOR_CASES) * 6
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
        out = subprocess.run([str(exe[DRIVER_KINDS[kind]]), str(case), str(i + 1)], capture_output=True,
                             text=True).stdout
        lines = out.splitlines()
        assert lines and lines[-1] == "errors 1 0 0 0 0 pending 0 ready 0", (i, lines[-3:])
        assert sorted(l for l in lines if len(l) == 17 and l[8] == " ") == expected, i
        assert expected, i
