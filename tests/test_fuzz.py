"""A small seeded run of the differential fuzzer (tvm_spinn/fuzz.py; benchmarks/fuzz.py runs
any number): random models over the supported op space and a sprinkle of host ops, built
for SpiNNaker and compared with TVM's llvm build and the integer reference."""
from hypothesis import HealthCheck, Phase, given, seed, settings

from tvm_spinn import fuzz


@seed(20261130)
@settings(max_examples=10, database=None, deadline=None, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(fuzz.models(), fuzz.copies())
def test_random_models_are_right(drawn, replicas):
    model, shape, description = drawn
    verdict = fuzz.judge(model, shape, f"{description} replicas={replicas}", replicas=replicas)
    assert verdict.verdict in ("right", "imprecise"), f"{verdict.verdict}: {verdict.detail}\n{description}"
