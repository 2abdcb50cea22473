"""Run the pure-Python amqtt broker (MQTT 3.1.1) on one loopback listener until SIGTERM.

Used by :class:`edge_agent.tools.localbroker.LocalBroker` when mosquitto is not installed::

    python -m edge_agent.tools._amqtt_broker 127.0.0.1 18830

It runs in its own process so that the broker's event loop and the agent's never mix.
Needs the optional extra ``demo`` (``amqtt``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import sys
from typing import Any


def _config(host: str, port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


async def _serve(host: str, port: int) -> None:
    # Imported by name: amqtt is an optional extra, absent when mypy runs without it.
    broker_module: Any = importlib.import_module("amqtt.broker")
    broker = broker_module.Broker(_config(host, port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    logging.getLogger(__name__).info("amqtt broker listening on %s:%d", host, port)
    await stop.wait()
    await asyncio.wait_for(broker.shutdown(), timeout=5)


def main(argv: list[str]) -> int:
    """Entry point: ``HOST PORT``."""
    if len(argv) != 2:
        print("usage: python -m edge_agent.tools._amqtt_broker HOST PORT", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # amqtt logs every state change of its internal state machine at INFO.
    logging.getLogger("transitions").setLevel(logging.WARNING)
    asyncio.run(_serve(argv[0], int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
