"""``EDGE_AGENT_PROFILE=FILE edge-agent run ...``: a cProfile of the running agent.

For developers measuring where the agent's time goes (docs/performance.md): every thread
is profiled (the asyncio loop and paho's network thread), and the merged statistics are
written to ``FILE`` when the agent stops (SIGTERM or Ctrl-C), for ``python -m pstats FILE``.
Times are CPU seconds of each thread (``time.thread_time``), so waiting in ``epoll`` or on a
queue costs nothing and the figures add up to what ``/proc`` charges the agent (plus the
profiler's own overhead, which inflates functions that make many calls).
Off unless the variable is set: nothing here is imported otherwise.
"""

from __future__ import annotations

import contextlib
import cProfile
import logging
import pstats
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


@contextlib.contextmanager
def profiled(path: str) -> Iterator[None]:
    """Profile this thread and every thread started inside the block; dump to ``path``."""
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_in_thread(frame: FrameType, event: str, arg: Any) -> None:
        # Called once as a new thread starts: give it a profiler of its own, which
        # replaces this hook for that thread.
        prof = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(prof)
        prof.enable()

    main = cProfile.Profile(time.thread_time)
    profiles.append(main)
    threading.setprofile(start_in_thread)
    main.enable()
    try:
        yield
    finally:
        main.disable()
        threading.setprofile(None)
        with lock:
            taken = list(profiles)
        stats = pstats.Stats(taken[0])
        for prof in taken[1:]:
            with contextlib.suppress(TypeError):  # a thread that never ran code
                stats.add(prof)
        stats.dump_stats(path)
        log.warning("profile of %d thread(s) written to %s", len(taken), path)
