"""Store implementations of the ports in hub.ports that need no server.

`hub.store.memory` holds the identity index in this process's memory, with
the Redis index's behaviour (hub/connectors/redis_store.py), for `hub
resolve`; `hub.store.memory_store` every other port the stages use, and
`MemoryStore`, all of them composed, for stage unit tests and benchmarks
(docs/memory-store.md). The Redis implementations stay in `hub/connectors/`.
"""
