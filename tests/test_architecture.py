"""The package's structure: stage packages in flow order, no import cycles
(tools/import_graph.py reads every import with ast), and no pickle anywhere."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import import_graph  # noqa: E402


def test_no_import_cycles_and_stages_import_only_earlier_stages():
    result = import_graph.check()
    assert result["cycles"] == [], result["cycles"]
    assert result["violations"] == [], result["violations"]
    # every stage package exists and the shared modules import no stage
    for stage in import_graph.STAGES:
        assert (ROOT / "tvm_spinn" / stage / "__init__.py").exists(), stage
    for shared in import_graph.SHARED:
        assert not set(result["stages"][shared]) & set(import_graph.STAGES), shared


def test_no_pickle_in_the_package():
    users = [str(p.relative_to(ROOT)) for p in (ROOT / "tvm_spinn").rglob("*.py")
             if "import pickle" in p.read_text() or "pickle.load" in p.read_text()]
    assert users == []
