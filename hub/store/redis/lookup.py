"""Golden records found by golden id (its survivor if merged away) or by a
lookup index key (`hub:lk:{<hash>}`, hub/lookup.py), for the lookup API, the
workbench and the CLI; synchronous, one or two round trips, and a lookup that
finds nobody costs as one that finds someone.
"""

from __future__ import annotations

import functools

import orjson
import redis
from redis.cluster import RedisCluster

from hub.crypto import Keyring
from hub.lookup import DECOY_GOLDEN_ID, decoy_golden
from hub.store.redis import scripts
from hub.store.redis.base import RedisBase
from hub.store.redis.keys import IDX, fwd_key, gold_key, lookup_key


class RedisLookup(RedisBase):
    def __init__(self, client: redis.Redis | RedisCluster, keyring: Keyring | None = None):
        super().__init__(client, keyring)
        self._forward = self._script(scripts.FORWARD)

    def lookup(self, golden_id: str | None = None, index_key: str | None = None, limit: int = 10) -> list[dict]:
        """Golden records by golden id (its survivor if merged away) or by a
        lookup index key; one or two round trips. Synchronous: called from web
        views, where it costs less than the asyncio client's machinery."""
        found = self._timed("lookup", self._lookup_sealed, golden_id, index_key, limit)
        records = sorted((orjson.loads(self._open(sealed, gold_key(gid), "golden")) for gid, sealed in found.items()
                          if sealed), key=lambda g: g["golden_id"])
        if not records:  # found nothing: open and parse a record anyway, as a found one costs (hub.lookup.decoy_golden)
            orjson.loads(self._open(self._sealed_decoy, gold_key(DECOY_GOLDEN_ID), "golden"))
        return records

    @functools.cached_property
    def _sealed_decoy(self) -> bytes:
        return self._seal(orjson.dumps(decoy_golden()), gold_key(DECOY_GOLDEN_ID), "golden")

    def _lookup_sealed(self, golden_id: str | None, index_key: str | None, limit: int) -> dict[str, bytes | None]:
        # the index (forwarding) and the golden records live in different slots: read one, then the other
        if golden_id is not None:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(fwd_key(golden_id))  # merged away: the survivor, found in the index
            pipe.hget(gold_key(golden_id), "golden")
            merged, sealed = pipe.execute()
            if merged is None:
                return {golden_id: sealed}
            (survivor,) = self._forward(keys=[IDX], args=[golden_id])
            gids = [survivor.decode()]
        else:
            gids = [gid.decode() for gid in self.client.srandmember(lookup_key(index_key), limit)]
        if len(gids) <= 1:  # the usual answer; a pipeline costs more client CPU than the command
            # an identifier nobody holds reads a record too (one that never exists): the round trips a lookup
            # makes must not tell who exists
            sealed = self.client.hget(gold_key(gids[0] if gids else DECOY_GOLDEN_ID), "golden")
            return {gids[0]: sealed} if gids else {}
        pipe = self.client.pipeline(transaction=False)
        for gid in gids:
            pipe.hget(gold_key(gid), "golden")
        return dict(zip(gids, pipe.execute()))

    def add_lookup_keys(self, keys: dict[str, set[str]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for gid, found in keys.items():
            for key in found:
                pipe.sadd(lookup_key(key), gid)
        pipe.execute()
