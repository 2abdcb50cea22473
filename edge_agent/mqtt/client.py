"""Small paho-mqtt helpers shared by the publisher and the ``tail`` console.

Both own a paho client with a network thread; neither should import the other to stop it.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt


def stop_network_thread(client: mqtt.Client) -> None:
    """``client.loop_stop()`` without paho 2.x's race: after a disconnect its thread
    may end on its own and set ``client._thread = None`` between ``loop_stop``'s check
    and its ``join()``, which then raises AttributeError. The thread is finishing
    either way; there is nothing left to stop."""
    try:
        client.loop_stop()
    except AttributeError:
        pass
