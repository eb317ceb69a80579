"""``python -m tvm_spinn``: the command line (:mod:`tvm_spinn.cli`)."""
import sys

from .cli import main

sys.exit(main())
