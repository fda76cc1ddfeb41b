"""`python -m pipeline --input INPUT --output OUTPUT [options]`."""

import logging
import os
import sys

from pipeline.main import main

if __name__ == "__main__":
    code = main()
    # The run is over: its outputs and records are closed and its worker processes stopped (atexit
    # has nothing left to do). Tearing down the interpreter's module graph (Beam, gRPC, the Google
    # clients) would add about 0.8-1 s to every command's wall time, measured on 2 cores, so the
    # process ends here once the logs and the console are flushed.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
