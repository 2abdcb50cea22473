"""The gateway's alarms: lifecycle and their state in the outbox."""
