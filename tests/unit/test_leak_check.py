"""The leak checks in tests/leakcheck.py must actually fail leaking tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from tests.leakcheck import cancel_tasks, leaked_tasks, leaked_threads

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_thread_started_and_still_running_is_reported() -> None:
    release = threading.Event()
    before = set(threading.enumerate())
    thread = threading.Thread(target=release.wait, name="leaky-thread", daemon=True)
    thread.start()
    try:
        assert leaked_threads(before, grace_s=0.1) == [thread]
    finally:
        release.set()
        thread.join()


def test_thread_that_finishes_within_grace_is_not_reported() -> None:
    release = threading.Event()
    before = set(threading.enumerate())
    thread = threading.Thread(target=release.wait, args=(0.2,), daemon=True)
    thread.start()
    assert leaked_threads(before, grace_s=5.0) == []
    assert not thread.is_alive()


async def test_pending_task_is_reported_and_older_tasks_are_not() -> None:
    older = asyncio.create_task(asyncio.sleep(60))
    before = set(asyncio.all_tasks())
    leaked = asyncio.create_task(asyncio.sleep(60), name="leaky-task")
    try:
        assert await leaked_tasks(before, grace_s=0.05) == [leaked]
    finally:
        await cancel_tasks([older, leaked])
    assert older.cancelled()
    assert leaked.cancelled()


async def test_task_cancelled_during_grace_is_not_reported() -> None:
    before = set(asyncio.all_tasks())
    task = asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0)
    task.cancel()
    assert await leaked_tasks(before, grace_s=1.0) == []


def test_autouse_fixture_fails_leaking_tests(tmp_path: Path) -> None:
    """Run a small suite in a child pytest with the same conftest wiring as ours.

    The child must also exit (not hang) although a non-daemon thread is still running.
    """
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from tests.conftest import pytest_sessionfinish, pytest_unconfigure
            from tests.leakcheck import no_task_leak, no_thread_leak

            @pytest.fixture(autouse=True)
            async def _no_leaks(no_task_leak):
                yield
            """
        )
    )
    (tmp_path / "test_leaky.py").write_text(
        textwrap.dedent(
            """
            import asyncio
            import threading

            def test_clean():
                threading.Thread(target=lambda: None).start()

            def test_leaks_thread():
                # non-daemon: without the exit hook the child would wait 120 s for it
                threading.Thread(target=threading.Event().wait, args=(120,), daemon=False,
                                 name="leaked-by-test").start()

            async def test_leaks_task():
                asyncio.create_task(asyncio.sleep(60), name="leaked-task")
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    # the leaking tests themselves pass; their teardown is the error
    assert "3 passed, 2 errors" in out, out
    assert "ERROR at teardown of test_leaks_thread" in out, out
    assert "leaked-by-test" in out, out
    assert "ERROR at teardown of test_leaks_task" in out, out
    assert "leaked-task" in out, out
    assert "non-daemon thread(s) still running at exit: 'leaked-by-test'" in out, out
