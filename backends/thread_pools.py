"""Process-wide thread pools for NumPy kernels that run work beside the caller.

A pool's threads do not survive ``fork``: a forked child process gets a new pool
the first time it asks.
"""

import os
from concurrent.futures import ThreadPoolExecutor

_POOLS = {}  # name -> (process id that made it, executor)


def thread_pool(name, workers):
    """The executor named ``name`` of this process, with ``workers`` threads."""
    made = _POOLS.get(name)
    if made is None or made[0] != os.getpid():
        made = _POOLS[name] = (
            os.getpid(),
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"dlx-{name}"),
        )
    return made[1]
