"""Events: the outbox written with every change, the per-platform feed the sequencer
numbers, and webhook deliveries (docs/events.md). No grpc and no generated code here: the
API layer registers the encoders that serialize a domain object as its API message."""
