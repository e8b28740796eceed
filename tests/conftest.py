"""Suite-wide settings: a fixed, small torch thread count.

On a 2-core machine the default (one OpenMP thread per core in every process) makes the main
process, data-loader workers and torchrun children spin against each other, and training steps
become 30-100x slower. The suite uses ``OMP_NUM_THREADS`` when it is set (e.g.
``OMP_NUM_THREADS=1 pytest``), else at most 2 threads; subprocesses that the tests start set
their own (1). No test depends on the thread count: tolerances are about the arithmetic, not
about one machine's kernels.
"""
import os

import torch


def _threads() -> int:
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return max(1, min(2, os.cpu_count() or 1))


torch.set_num_threads(_threads())
