"""``edge-agent tail``: what the platform receives, live."""
