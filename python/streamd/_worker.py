"""`python -m streamd._worker SPEC`: a pipeline worker for a Python stage or source,
started by `streamd run` (not by hand). The worker loop is streamd's own, from the
native module; it calls into Python only for the class's methods."""

import signal
import sys

from ._streamd import run_worker

if __name__ == "__main__":
    # The supervisor stops workers with SIGTERM and drains them in order; a Ctrl-C at the
    # terminal is the supervisor's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(run_worker(sys.argv[1]))
