"""Fail any test that leaks an asyncio task or a thread.

``tests/conftest.py`` turns the two fixtures below into autouse fixtures. The checks are
plain functions so that ``tests/unit/test_leak_check.py`` can prove they fire.

A leaked task is one still pending on the test's event loop when the test's fixtures
have been torn down (tasks that existed before the test started are ignored). A leaked
thread is one started during the test that is still alive after a short grace period.
Leaked tasks are cancelled after being reported, so they do not spill into later tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Collection, Iterator

import pytest

#: How long a thread may take to finish after the test (a paho loop thread that was
#: just told to stop, an executor worker finishing its job).
THREAD_GRACE_S = 2.0
#: How long a task may take to finish after the test (one that was just cancelled).
TASK_GRACE_S = 0.5


def leaked_threads(
    before: Collection[threading.Thread], grace_s: float = THREAD_GRACE_S
) -> list[threading.Thread]:
    """Threads alive now that were not in ``before``, after waiting up to ``grace_s``."""
    deadline = time.monotonic() + grace_s
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() >= deadline:
            return leaked
        time.sleep(0.02)


async def leaked_tasks(
    before: Collection[asyncio.Task[object]], grace_s: float = TASK_GRACE_S
) -> list[asyncio.Task[object]]:
    """Tasks of the running loop still pending that were not in ``before``.

    Must be awaited on the loop to check; the calling task itself is never reported.
    """
    current = asyncio.current_task()
    deadline = time.monotonic() + grace_s
    while True:
        leaked = [
            t for t in asyncio.all_tasks() if t is not current and t not in before and not t.done()
        ]
        if not leaked or time.monotonic() >= deadline:
            return leaked
        await asyncio.sleep(0.01)


async def cancel_tasks(tasks: Collection[asyncio.Task[object]], timeout_s: float = 2.0) -> None:
    """Cancel ``tasks`` and wait (bounded) for them to finish."""
    for task in tasks:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout_s)


def describe_threads(threads: Collection[threading.Thread]) -> str:
    return ", ".join(f"{t.name!r} (daemon={t.daemon}, target={_target(t)})" for t in threads)


def describe_tasks(tasks: Collection[asyncio.Task[object]]) -> str:
    return "; ".join(repr(t) for t in tasks)


def _target(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    return getattr(target, "__qualname__", repr(target))


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """Fail the test when a thread it started is still alive after it."""
    before = set(threading.enumerate())
    yield
    leaked = leaked_threads(before)
    if leaked:
        pytest.fail(
            f"test leaked {len(leaked)} thread(s) still running after "
            f"{THREAD_GRACE_S:.0f} s: {describe_threads(leaked)}",
            pytrace=False,
        )


@pytest.fixture
async def no_task_leak(no_thread_leak: None) -> AsyncIterator[None]:
    """Fail the test when an asyncio task it created is still pending after it.

    Depends on ``no_thread_leak`` so the thread check runs after this loop is closed
    (closing it also stops the loop's default executor threads).
    """
    before = set(asyncio.all_tasks())
    yield
    leaked = await leaked_tasks(before)
    if leaked:
        description = describe_tasks(leaked)
        await cancel_tasks(leaked)
        pytest.fail(
            f"test leaked {len(leaked)} asyncio task(s) still pending at teardown "
            f"(now cancelled): {description}",
            pytrace=False,
        )
