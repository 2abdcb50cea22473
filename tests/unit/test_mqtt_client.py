"""The client wrapper's choices that need no broker: how a client is built, which MQTT version
the next CONNECT uses. The brokers themselves are in tests/integration (test_broker_interop:
amqtt and RabbitMQ refusing MQTT 5, for the publisher, tail and bench)."""

from __future__ import annotations

import logging

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from edge_agent.mqtt.client import (
    RC_BAD_CREDENTIALS,
    RC_UNSUPPORTED_PROTOCOL,
    Client,
    ClientOptions,
    VersionChoice,
    Will,
    build_client,
)

V5, V311 = MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311


def test_build_client_applies_the_options() -> None:
    will = Will("campus/s/gw1/status", b'{"state":"offline"}')
    c = build_client(
        ClientOptions(
            client_id="gw1",
            protocol="3.1.1",
            username="u",
            password="p",
            will=will,
            reconnect_min_s=0.2,  # paho counts whole seconds: at least 1
            reconnect_max_s=30,
            connect_timeout_s=3.0,
        )
    )
    assert isinstance(c, Client)
    assert c.protocol == V311
    assert c.username == "u"
    assert c.password == "p"
    assert c._client_id == b"gw1"
    assert c._will_topic == will.topic.encode()
    assert c._will_payload == will.payload
    assert c._will_retain is True
    assert c._reconnect_min_delay == 1
    assert c._reconnect_max_delay == 30
    assert c.connect_timeout == 3.0


def test_mqtt_5_refused_means_3_1_1_next_and_it_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = build_client(ClientOptions(client_id="t"))
    v = VersionChoice("5", "broker:1883", logger=logging.getLogger("owner"))
    v.attempting(int(c.protocol))
    assert v.refused(c, RC_UNSUPPORTED_PROTOCOL, "Unsupported protocol version")
    assert c.next_protocol == V311
    # announced once, at INFO, through the owner's logger; later refusals at DEBUG
    v.attempting(int(V5))
    assert v.unanswered(c, "it closed the connection without answering")
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert [r.name for r in infos] == ["owner"]
    assert "does not accept MQTT 5" in infos[0].getMessage()
    v.attempting(int(V311))
    assert v.connected(c) == "3.1.1"
    assert v.in_use == "3.1.1"
    # once 3.1.1 worked for this broker it stays: a failed 3.1.1 attempt does not go back
    # to MQTT 5, and the fallback is not "decided" (nor announced) a second time
    v.attempting(int(V311))
    assert not v.unanswered(c, "closed")
    assert c.next_protocol == V311
    v.attempting(int(V5))
    assert not v.refused(c, RC_UNSUPPORTED_PROTOCOL, "Unsupported protocol version")


def test_3_1_1_failing_too_goes_back_to_mqtt_5() -> None:
    c = build_client(ClientOptions(client_id="t"))
    v = VersionChoice("5", "broker:1883")
    v.attempting(int(V5))
    assert v.unanswered(c, "closed")
    v.attempting(int(V311))
    assert not v.unanswered(c, "closed")  # a broker that is just down: no version helps
    assert c.next_protocol == V5


def test_other_refusals_and_configured_3_1_1_never_switch() -> None:
    c = build_client(ClientOptions(client_id="t", protocol="3.1.1"))
    v = VersionChoice("3.1.1", "broker:1883")
    v.attempting(int(c.protocol))
    assert not v.unanswered(c, "closed")
    assert not v.refused(c, RC_UNSUPPORTED_PROTOCOL, "Unsupported protocol version")
    assert c.next_protocol is None
    c5 = build_client(ClientOptions(client_id="t"))
    v5 = VersionChoice("5", "broker:1883")
    v5.attempting(int(V5))
    assert not v5.refused(c5, RC_BAD_CREDENTIALS, "Bad user name or password")
    assert c5.next_protocol is None
