"""Store implementations of the ports in hub.ports: the state the hub keeps.

`hub.store.redis` holds the workers' state in Redis, a class per port over a
shared base (key layout and Lua scripts as leaves), and `RedisStore`, every
port over one client. `hub.store.memory` holds the identity index in this
process's memory, with the Redis index's behaviour, for `hub resolve`;
`hub.store.memory_store` every other port the stages use, and `MemoryStore`,
all of them composed, for stage unit tests and benchmarks
(docs/memory-store.md).
"""
