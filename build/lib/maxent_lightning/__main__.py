"""``python -m maxent_lightning``: the command line (``cli.entry``)."""

import os
import signal
import sys


def _while_starting(signum, frame) -> None:
    """A signal before the CLI has loaded: nothing was written yet, so stop at once."""
    sys.stderr.write(f"error: interrupted by {signal.Signals(signum).name} while starting; "
                     "nothing was written; rerun the same command\n")
    os._exit(128 + signum)


for _signal in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_signal, _while_starting)

from maxent_lightning.cli import entry  # noqa: E402  (after the handlers: imports take seconds)

entry()
