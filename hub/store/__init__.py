"""Store implementations of the ports in hub.ports that need no server.

`hub.store.memory` holds the identity index in this process's memory, with
the Redis index's behaviour (hub/connectors/redis_store.py), for `hub
resolve` and for stage unit tests. The Redis implementations stay in
`hub/connectors/`.
"""
