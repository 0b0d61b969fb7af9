"""Target connector `redis://host:port/db` (or `unix:///path.sock`, or
`redis+cluster://host:port[,host:port]` for a Redis Cluster): a lookup cache
of a target's projection in Redis, for sub-millisecond reads by key.

Point it at a target keyed by `loyalty_id` (the POS projection keyed by
loyalty card) and a till reads `GET <prefix><loyalty id>` (the projection as
the target receives it); a tombstone deletes the key, and the syndicate stage
already sends one when a customer's loyalty id changes (`key_changed`).
Writes of a flush go in one pipeline, in order (on a cluster the pipeline is
split by node, and the writes of one key keep their order).
"""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster

from hub.store.redis.client import client_from_url

DEFAULT_PREFIX = "lookup:"


class LookupCacheSink:
    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, ttl_s: int | None = None):
        self.url = url
        self.prefix = prefix.encode()
        self.ttl_s = ttl_s
        self.client: redis.Redis | RedisCluster | None = None
        self._pending: list = []

    def setup(self) -> None:
        if self.client is None:
            self.client = client_from_url(self.url, socket_timeout=5)

    def add(self, record) -> None:
        if record.key is None:  # nothing to look it up by: fails, so it ends in the DLQ rather than vanishing
            raise ValueError(f"{record.topic}: a record without a key cannot be cached")
        self._pending.append((self.prefix + record.key, record.value))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, value in pending:
            if value is None:
                pipe.delete(key)
            else:
                pipe.set(key, value, ex=self.ttl_s)
        pipe.execute()


class LookupCache:
    """The reading side: what a till or app calls."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX):
        self.client = client_from_url(url)
        self.prefix = prefix

    def get(self, key: str) -> bytes | None:
        return self.client.get(self.prefix + key)
