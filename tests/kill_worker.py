"""Run by test_faults.py: ``sslandmarks train ARGS``, SIGKILLed by itself in the middle of step K (inside
the forward pass of the K-th step, between two checkpoints): a real kill at a moment that does not depend on
the machine's speed.

usage: python kill_worker.py K train --config ... --out ...
"""

import os
import signal
import sys

import sslandmarks.train as train
from sslandmarks.cli import main

if __name__ == "__main__":
    kill_at, calls, real = int(sys.argv[1]), [0], train.compute_losses

    def compute_losses_then_die(*args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    train.compute_losses = compute_losses_then_die
    sys.exit(main(sys.argv[2:]))
