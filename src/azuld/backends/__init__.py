"""Event-log backends: `embedded` (SQLite, one machine) and, at scale, Kafka."""
