"""Callbacks from paho's thread reach the event loop in order, batched, and survive a bad one."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from edge_agent.mqtt.publisher import MqttSettings, Publisher


class NoOutbox:
    def subscribe(self, _listener: Any) -> None:
        pass

    def subscribe_deleted(self, _listener: Any) -> None:
        pass


async def test_thread_events_run_in_order_with_few_wakeups(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pub = Publisher(MqttSettings(host="127.0.0.1", port=1, root="r", client_id="c"), NoOutbox())  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    pub._loop = loop
    seen: list[int] = []
    wakeups = [0]
    original = pub._run_events

    def counting_run() -> None:
        wakeups[0] += 1
        original()

    pub._run_events = counting_run  # type: ignore[method-assign]

    def bad(_i: int) -> None:
        raise ValueError("a broken callback")

    def paho_thread() -> None:
        for i in range(5000):
            pub._call(seen.append, i)
            if i == 2500:
                pub._call(bad, i)

    with caplog.at_level(logging.ERROR):
        t = threading.Thread(target=paho_thread)
        t.start()
        await asyncio.to_thread(t.join)
        for _ in range(100):
            if len(seen) == 5000:
                break
            await asyncio.sleep(0.01)
    assert seen == list(range(5000))  # every event, in the order paho raised them
    assert wakeups[0] < 5000  # many events per wake-up of the loop
    assert "a broken callback" in caplog.text  # logged; the events behind it still ran


def test_stop_network_thread_survives_the_thread_ending_by_itself() -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge_agent.mqtt.client import stop_network_thread

    client = mqtt.Client(CallbackAPIVersion.VERSION2)

    class EndingThread:
        """Ends (as paho's _thread_main does: ``client._thread = None``) right after
        loop_stop has checked it, the moment loop_stop compares it with the caller."""

        def __eq__(self, other: object) -> bool:
            client._thread = None  # type: ignore[assignment]
            return False

        __hash__ = object.__hash__

    client._thread = EndingThread()  # type: ignore[assignment]
    with pytest.raises(AttributeError):
        client.loop_stop()  # paho's own call hits the race
    client._thread = EndingThread()  # type: ignore[assignment]
    stop_network_thread(client)  # ours does not
    assert client._thread is None
