#!/usr/bin/env bash
# Creates .venv with the pinned dependencies and builds the native parts (CMake):
# the "spinnaker" TVM runtime module and the host build of the C kernels + emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/python -c "import tvm_spinn; print('tvm_spinn', tvm_spinn.__version__, 'ready')"
