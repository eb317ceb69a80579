"""``python -m tvm_spinn.board_double [--host H] [--port P]``: serve a SpiNN-5 board double.

The first line printed is the value to use, ``TVM_SPINN_BOARD=double://H:P``; it serves
until stopped (Ctrl-C or SIGTERM)."""
from __future__ import annotations

import argparse
import logging
import signal
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tvm_spinn.board_double", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="control port (default: any free port)")
    parser.add_argument("--sdp-port", type=int, default=0, help="UDP port for SDP datagrams (default: any)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="board double: %(message)s")
    from .server import BoardDouble

    double = BoardDouble(args.host, args.port, args.sdp_port)
    print(f"TVM_SPINN_BOARD=double://{args.host}:{double.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: double.stop())
    try:
        double.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
