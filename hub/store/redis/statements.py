"""Latest-wins statements per member in Redis, shared by the consent store and
the survey store: one hash per member, one sealed item per slot (a purpose and
channel, a survey), replaced only by a newer one
(hub.store.redis.scripts.PUT_LATEST, once per member, pipelined per node).
"""

from __future__ import annotations

import hashlib

import orjson
import redis
from redis.cluster import RedisCluster

from hub.crypto import Keyring
from hub.store.redis import scripts
from hub.store.redis.base import RedisBase


class RedisStatements(RedisBase):
    def __init__(self, client: redis.Redis | RedisCluster, keyring: Keyring | None = None):
        super().__init__(client, keyring)
        self._put_latest_script = self._script(scripts.PUT_LATEST)

    async def _put_latest(self, key, items: dict[str, list[dict]], slot, at: str, operation: str,
                          later: bool = False) -> dict[str, bool]:
        """Per member hash `key(member)`: each item in its `slot(item)`, kept
        only if newer (by `item[at]`) than what the slot holds. True for each
        member whose hash changed or already held one of the items; with
        `later`, nothing (held for the next round trip: RedisBase._eval_each_later)."""
        members = [m for m, found in items.items() if found]
        if not members:
            return {}
        calls = []
        for member in members:
            args = []
            hash_key_ = key(member)
            for item in items[member]:
                field = slot(item)
                body = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
                tie = hashlib.blake2s(body, digest_size=8).hexdigest()
                args += [field, item[at], tie, self._seal(body, hash_key_, field)]
            calls.append((hash_key_, args))
        if later:
            self._eval_each_later(self._put_latest_script, calls, operation)
            return {}
        changed = self._timed(operation, self._eval_each, self._put_latest_script, calls)
        return {m: bool(c) for m, c in zip(members, changed)}

    async def _latest(self, key, members: list[str], operation: str) -> dict[str, list[dict]]:
        return self._latest_soon(key, members, operation)()

    def _latest_soon(self, key, members: list[str], operation: str):
        """`_latest`, held for the next round trip (RedisBase._soon): a function giving it."""
        if not members:
            return dict
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            pipe.hgetall(key(member))
        replies = self._soon(pipe, operation)
        return lambda: self._opened(key, members, replies())

    def _opened(self, key, members: list[str], rows) -> dict[str, list[dict]]:
        result = {}
        for member, values in zip(members, rows):
            hash_key_ = key(member)
            result[member] = [orjson.loads(self._open(v.split(b"|", 2)[2], hash_key_, f.decode()))
                              for f, v in sorted(values.items())]
        return result

    async def _forget(self, key, members: list[str], operation: str) -> None:
        if members:
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.delete(key(member))
            await self._write(pipe, operation)
