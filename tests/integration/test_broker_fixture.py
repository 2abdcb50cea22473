"""The broker fixtures themselves: real mosquitto, MQTT 5, outages on the same port."""

from __future__ import annotations

import socket

import pytest

from tests.mqtt_helpers import MqttBroker, mqtt_subscriber, publish


def _refuses(broker: MqttBroker) -> bool:
    try:
        with socket.create_connection((broker.host, broker.port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_session_broker_speaks_mqtt5_on_loopback(mqtt_broker: MqttBroker) -> None:
    assert mqtt_broker.host == "127.0.0.1"
    assert mqtt_broker.protocol == "5"
    with mqtt_subscriber(mqtt_broker, ["fixture/a/#", "fixture/b"]) as sub:
        publish(mqtt_broker, "fixture/a/1", b'{"v": 1}')
        publish(mqtt_broker, "fixture/b", b"plain", qos=0)
        first = sub.wait_for(lambda m: m.topic == "fixture/a/1")
        assert first.json() == {"v": 1}
        assert first.properties is not None  # MQTT 5 messages carry a properties block
        assert sub.wait_for(lambda m: m.topic == "fixture/b").text == "plain"
        assert [m.topic for m in sub.messages] == ["fixture/a/1", "fixture/b"]


def test_wait_for_fails_with_what_was_received(mqtt_broker: MqttBroker) -> None:
    with mqtt_subscriber(mqtt_broker, "fixture/timeout/#") as sub:
        publish(mqtt_broker, "fixture/timeout/other", b"x")
        sub.wait_for(lambda m: m.topic.endswith("other"))
        with pytest.raises(pytest.fail.Exception, match="fixture/timeout/other"):
            sub.wait_for(lambda m: m.topic.endswith("never"), timeout=0.3)


def test_outage_same_port_subscriber_comes_back(fresh_mqtt_broker: MqttBroker) -> None:
    broker = fresh_mqtt_broker
    port = broker.port
    with mqtt_subscriber(broker, "outage/#") as sub:
        publish(broker, "outage/retained", b"r", retain=True)
        sub.wait_for(lambda m: m.payload == b"r")

        broker.stop()
        assert not broker.running
        assert _refuses(broker)

        broker.start()
        assert broker.port == port
        # paho reconnects by itself; the helper resubscribes on every connect.
        sub.clear()
        publish(broker, "outage/after", b"back")
        # The publish can overtake the resubscription, so retry once it is in place.
        msg = None
        for _ in range(10):
            try:
                msg = sub.wait_for(lambda m: m.topic == "outage/after", timeout=0.5)
                break
            except pytest.fail.Exception:
                publish(broker, "outage/after", b"back")
        assert msg is not None
        assert msg.payload == b"back"
        assert sub.connects == 2
        # persistence is off: a restart is a real restart, retained messages are gone
        assert not any(m.topic == "outage/retained" for m in sub.messages)


def test_restart_keeps_port(fresh_mqtt_broker: MqttBroker) -> None:
    port = fresh_mqtt_broker.port
    fresh_mqtt_broker.restart()
    assert fresh_mqtt_broker.port == port
    with mqtt_subscriber(fresh_mqtt_broker, "restart/#") as sub:
        publish(fresh_mqtt_broker, "restart/x", b"1")
        assert sub.wait_for().payload == b"1"
