"""The SQLite outbox: every message, its seq, device cursors and alarm state."""
