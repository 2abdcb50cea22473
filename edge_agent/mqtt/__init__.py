"""The MQTT side: the publisher, the paho client wrapper, TLS."""
