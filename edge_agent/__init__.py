"""Campus Edge Agent: school-campus IoT gateway (drivers -> SQLite outbox -> MQTT)."""

__version__ = "0.1.0"
