#!/usr/bin/env python3
"""CPU of one Modbus poll: ``PollLoop.poll_once`` -> ``ModbusDriver.read`` -> the exchange.

The gateway90 load of ``edge-agent bench`` without the rest of the agent: the campus
simulator (45 classrooms = 45 ``air7in1`` + 45 ``lux_noise``, 90 units behind ONE Modbus
TCP endpoint, register 1 of ``lux_noise`` reserved so its coalesced read is split: 135
requests a round) runs in its own process, started as ``edge-agent bench`` starts it but
with no request delay; the 90 drivers and poll loops, built as the supervisor builds them
(one ``Bus``, ``timeout_s`` 1, the supervisor's read timeout), run in this process with a
telemetry sink that drops the readings. A round polls the 90 devices one after the other,
as ``SharedTick`` does. ``time.thread_time`` (this thread's CPU, user + system) is taken
around every ``poll_once``: the figures are the median CPU per poll and per exchange
(a poll's CPU divided by the requests its plan sends), per run, then the median and the
spread over the runs. The first round (connect, split of the refused block) is not counted.

    .venv/bin/python scripts/microbench_poll.py                   # 5 runs x 30 rounds, hot
    .venv/bin/python scripts/microbench_poll.py --gap-ms 20       # 20 ms idle between polls
    .venv/bin/python scripts/microbench_poll.py --runs 7 --rounds 50 --json out.json

``--gap-ms`` sleeps between two polls, as the agent idles between requests (at 20 ms a
request on the real line one request leaves the process idle for 74 ms): what a poll costs
when its code and data are no longer in the CPU caches.

To compare two trees (say main and a branch) on a shared box, alternate them against the
same simulator: ``--tree DIR`` (repeat it) runs each measurement in a child process with
``PYTHONPATH=DIR``, tree after tree, ``--runs`` times::

    BEFORE=$(mktemp -d) && git archive main | tar -x -C "$BEFORE"   # a tree of main
    .venv/bin/python scripts/microbench_poll.py --tree "$BEFORE" --tree . --runs 7

Each child prints where it imported ``edge_agent`` from, so a tree that is not picked up
shows. The box is shared: compare only figures taken side by side or alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CLASSROOMS = 45
RESERVED = "lux_noise:1"


@contextlib.contextmanager
def simulator(workdir: Path) -> Iterator[Path]:
    """The campus simulator as gateway90 runs it (no request delay); yields its layout."""
    layout = workdir / "layout.json"
    argv = [
        sys.executable, "-m", "edge_agent.simulators", "campus",
        "--classrooms", str(CLASSROOMS), "--meters", "0",
        "--host", "127.0.0.1", "--base-port", "0", "--layout-out", str(layout),
        "--units-per-server", str(2 * CLASSROOMS), "--reserved", RESERVED,
        "--log-level", "WARNING",
    ]  # fmt: skip
    with (workdir / "simulator.log").open("wb") as out:
        sim = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            deadline = time.monotonic() + 60
            while not layout.exists():
                if sim.poll() is not None:
                    raise SystemExit(f"the simulator exited: see {workdir / 'simulator.log'}")
                if time.monotonic() > deadline:
                    raise SystemExit("the simulator wrote no layout within 60 s")
                time.sleep(0.05)
            time.sleep(0.2)
            yield layout
        finally:
            sim.terminate()
            try:
                sim.wait(10)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait()


class _Drop:
    """An ``Emit`` that keeps nothing."""

    def telemetry(self, *_a: Any, **_kw: Any) -> None:
        pass

    def event(self, *_a: Any, **_kw: Any) -> None:
        pass


async def measure(layout: dict[str, Any], rounds: int, gap_s: float) -> dict[str, Any]:
    """One run: a fresh set of drivers and poll loops, one warm-up round, ``rounds`` rounds."""
    from edge_agent.config.models import TcpBus
    from edge_agent.driver import Bus, DriverContext
    from edge_agent.drivers.modbus import ModbusDevice, ModbusDriver, ModbusSettings
    from edge_agent.poll import PollLoop

    # the split of the refused block is logged once per device: not what is measured
    logging.getLogger("edge_agent").setLevel(logging.ERROR)
    (server,) = layout["servers"]
    bus = Bus("gw")
    bus.resources["config"] = TcpBus(
        id="gw", type="tcp", host=server["host"], port=int(server["port"]), framer="socket"
    )
    ctx = DriverContext(buses={"gw": bus}, settings=ModbusSettings())
    loops: list[PollLoop] = []
    drivers: list[ModbusDriver] = []
    for dev in layout["devices"]:
        cfg = ModbusDevice.model_validate(
            {
                "id": dev["id"],
                "kind": "modbus",
                "profile": dev["profile"],
                "bus": "gw",
                "unit": int(dev["unit"]),
                "interval_s": 10.0,
                "timeout_s": 1.0,
            }
        )
        driver = ModbusDriver(cfg, ctx)
        drivers.append(driver)
        loops.append(
            PollLoop(
                driver,
                interval_s=10.0,
                # as the supervisor sets it
                read_timeout_s=min(10.0, max(5.0, cfg.timeout_s * (cfg.retries + 1) * 8)),
                offline_after=cfg.offline_after,
                emit=_Drop(),
                state_sink=lambda _d, _p: None,
            )
        )
    clock = time.thread_time
    # as SharedTick calls it: with its task, where poll_once takes one (main before run O not)
    takes_task = "task" in inspect.signature(PollLoop.poll_once).parameters
    args = (asyncio.current_task(),) if takes_task else ()
    per_poll: list[float] = []
    per_exchange: list[float] = []
    failed = 0
    try:
        for loop in loops:  # warm-up: connect, split the refused block, fill the caches
            await loop.poll_once()
        # requests a poll sends, once the plan is settled (the split is kept)
        requests = [len(d._plan) for d in drivers]
        reads0 = sum(p.health.reads for p in loops)
        wall0 = time.monotonic()
        ru0 = resource.getrusage(resource.RUSAGE_THREAD)
        for _ in range(rounds):
            for loop, n in zip(loops, requests, strict=True):
                if gap_s:
                    await asyncio.sleep(gap_s)
                t0 = clock()
                await loop.poll_once(*args)
                dt = clock() - t0
                per_poll.append(dt)
                per_exchange.append(dt / n)
        ru1 = resource.getrusage(resource.RUSAGE_THREAD)
        wall = time.monotonic() - wall0
        failed = rounds * len(loops) - (sum(p.health.reads for p in loops) - reads0)
    finally:
        for driver in drivers:
            await driver.close()
    return {
        "devices": len(loops),
        "requests_per_round": sum(requests),
        "rounds": rounds,
        "gap_ms": gap_s * 1000,
        "poll_us": statistics.median(per_poll) * 1e6,
        "exchange_us": statistics.median(per_exchange) * 1e6,
        "round_cpu_ms": sum(per_poll) / rounds * 1e3,
        "round_wall_ms": wall / rounds * 1e3 - gap_s * len(loops) * 1e3,
        # the whole rounds (the gaps' wake-ups too), split into user and kernel time
        "poll_user_us": (ru1.ru_utime - ru0.ru_utime) / len(per_poll) * 1e6,
        "poll_sys_us": (ru1.ru_stime - ru0.ru_stime) / len(per_poll) * 1e6,
        "failed_polls": failed,
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for key in ("poll_us", "exchange_us", "round_cpu_ms", "poll_user_us", "poll_sys_us"):
        values = [r[key] for r in runs]
        out[key] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "each": [round(v, 2) for v in values],
        }
    out["failed_polls"] = sum(r["failed_polls"] for r in runs)
    out["requests_per_round"] = runs[0]["requests_per_round"]
    return out


def _print(label: str, s: dict[str, Any]) -> None:
    def fmt(key: str) -> str:
        v = s[key]
        return f"{v['median']:8.1f}  ({v['min']:.1f}-{v['max']:.1f})"

    print(
        f"{label:<28} poll {fmt('poll_us')} us   exchange {fmt('exchange_us')} us   "
        f"round {fmt('round_cpu_ms')} ms\n{'':<28} user {fmt('poll_user_us')} us   "
        f"kernel {fmt('poll_sys_us')} us a poll   [{s['runs']} runs, "
        f"{s['requests_per_round']} requests/round, {s['failed_polls']} failed polls]"
    )


def _child(args: argparse.Namespace, layout: Path) -> dict[str, Any]:
    """One measurement in this process (the ``--child`` side of ``--tree``)."""
    import edge_agent

    result = asyncio.run(measure(json.loads(layout.read_text()), args.rounds, args.gap_ms / 1000))
    result["edge_agent"] = str(Path(edge_agent.__file__).resolve().parent)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="runs (fresh drivers each); median")
    p.add_argument("--rounds", type=int, default=30, help="rounds of 90 polls per run")
    p.add_argument("--gap-ms", type=float, default=0.0, help="idle time between two polls")
    p.add_argument("--tree", action="append", default=[], help="compare trees (PYTHONPATH)")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--layout", type=Path, help=argparse.SUPPRESS)  # a running simulator's
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        print(json.dumps(_child(args, args.layout)))
        return 0

    results: dict[str, Any] = {"load_start": os.getloadavg()}
    with (
        tempfile.TemporaryDirectory(prefix="microbench-poll-") as tmp,
        simulator(Path(tmp)) as layout,
    ):
        if not args.tree:
            spec = json.loads(layout.read_text())
            runs = [
                asyncio.run(measure(spec, args.rounds, args.gap_ms / 1000))
                for _ in range(args.runs)
            ]
            results["this"] = _summary(runs) | {"each_run": runs}
            _print("this tree", results["this"])
        else:
            per_tree: dict[str, list[dict[str, Any]]] = {t: [] for t in args.tree}
            for i in range(args.runs):
                order = args.tree if i % 2 == 0 else list(reversed(args.tree))
                for tree in order:
                    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
                    argv = [
                        sys.executable, __file__, "--child", "--layout", str(layout),
                        "--rounds", str(args.rounds), "--gap-ms", str(args.gap_ms),
                    ]  # fmt: skip
                    done = subprocess.run(  # noqa: S603
                        argv, env=env, check=True, capture_output=True, text=True, cwd=tree
                    )
                    run = json.loads(done.stdout.strip().splitlines()[-1])
                    per_tree[tree].append(run)
                    print(
                        f"  run {i + 1} {tree}: poll {run['poll_us']:.1f} us, exchange "
                        f"{run['exchange_us']:.1f} us ({run['edge_agent']})",
                        flush=True,
                    )
            for tree, runs in per_tree.items():
                results[tree] = _summary(runs) | {"each_run": runs}
                _print(tree, results[tree])
    results["load_end"] = os.getloadavg()
    print(f"load average: {results['load_start']} -> {results['load_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
