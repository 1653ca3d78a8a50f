"""What puts events on the bus: the outbox relay, the build publisher, Kafka helpers."""
