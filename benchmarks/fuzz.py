"""Differential fuzzer: random models (tvm_spinn.fuzz) built for SpiNNaker vs TVM's llvm build.

    python benchmarks/fuzz.py [--n 500] [--seed 0] [--json PATH] [--show wrong,raw]

Prints the count of each verdict (right, imprecise, wrong, clear error, raw exception) and the
details of the ones asked for; --json writes every verdict. Models are drawn by
hypothesis with a fixed seed (derandomized), so a run is repeatable.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from tqdm import tqdm  # noqa: E402

from tvm_spinn import fuzz  # noqa: E402


def run(n: int, seed_value: int, progress: bool = True) -> list:
    """Verdicts of n drawn models."""
    verdicts = []
    bar = tqdm(total=n, disable=not progress, desc="models")

    @seed(seed_value)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(fuzz.models(), fuzz.copies())
    def one(drawn, replicas):
        model, shape, description = drawn
        verdicts.append(fuzz.judge(model, shape, f"{description} replicas={replicas}", replicas=replicas))
        bar.update(1)

    one()
    bar.close()
    return verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write every verdict here")
    ap.add_argument("--show", default="wrong,raw exception", help="verdicts whose details to print")
    args = ap.parse_args()
    logging.getLogger("tvm_spinn").setLevel(logging.ERROR)  # the per-model build logs
    start = time.perf_counter()
    verdicts = run(args.n, args.seed)
    counts = Counter(v.verdict for v in verdicts)
    print(f"{len(verdicts)} models in {time.perf_counter() - start:.0f} s (seed {args.seed})")
    for verdict in ("right", "imprecise", "wrong", "clear error", "raw exception"):
        print(f"  {verdict:14s} {counts.get(verdict, 0)}")
    show = {s.strip() for s in args.show.split(",")}
    for v in verdicts:
        if v.verdict in show:
            print(f"\n[{v.verdict}] {v.detail}\n  {v.description[:600]}")
    if args.json:
        Path(args.json).write_text(json.dumps([v.__dict__ for v in verdicts], indent=1))
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()
