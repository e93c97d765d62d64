"""One helper thread per process, for work that runs beside the main thread's.

The kiosk analyses one photo at a time on a few cores (2 on the development VM, 4 on a Pi 4
or 5), and most of its steps use one of them. Some of that work
splits into two independent parts whose heavy steps let go of the GIL (OpenCV calls, large
numpy operations): decoding a JPEG's luma and its colour preview, developing the film and
measuring its colour. The main thread hands one part to this helper and does the other.

What this module does not do: run more than one task at a time, or anything that must not
wait behind the task before it (the helper is shared).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_pool: tuple[int, ThreadPoolExecutor] | None = None


def helper() -> ThreadPoolExecutor:
    """The process's helper thread, made on first use (and again after a fork: a forked
    child does not inherit the parent's threads)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="helper"))
    return _pool[1]
