"""The threaded subscriber (tail, bench) closes every socket it opened when it stops.

paho leaves its wake-up socket pair to ``Client.__del__``; in a reference cycle the garbage
collector may finalise the sockets first, which warns (an error here) at a random later
moment in another test. So: nothing the client holds is still open after ``stop()``.
"""

from __future__ import annotations

import socket

from edge_agent.mqtt.client import ClientOptions, Subscriber
from tests.mqtt_helpers import MqttBroker


def test_a_stopped_subscriber_holds_no_open_socket(mqtt_broker: MqttBroker) -> None:
    sub = Subscriber(ClientOptions("sockets-sub"), ["x/#"], lambda _m: None)
    sub.start(mqtt_broker.host, mqtt_broker.port)
    assert sub.subscribed.wait(10), "never subscribed"
    held = [v for v in vars(sub.client).values() if isinstance(v, socket.socket)]
    assert held, "the client holds no socket while running: the check below would be empty"
    sub.stop()
    still_open = [v for v in vars(sub.client).values() if isinstance(v, socket.socket)]
    still_open = [s for s in still_open if s.fileno() != -1]
    assert still_open == []
