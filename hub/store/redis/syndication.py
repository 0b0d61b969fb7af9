"""The syndication state (hub.ports.SyndicationState) in Redis: what each
target last received per golden record, sealed under `hub:synd:{<gid>}`; with
the consent and decay schedules the syndicate stage takes due records from.
"""

from __future__ import annotations

from hub.store.redis.keys import synd_key
from hub.store.redis.schedules import RedisSchedules


class RedisSyndicationState(RedisSchedules):
    async def load_syndication(self, golden_ids: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
        return (await self.load_syndication_soon(golden_ids))()

    async def load_syndication_soon(self, golden_ids: list[str]):
        if not golden_ids:
            return dict
        pipe = self.client.pipeline(transaction=False)
        for gid in golden_ids:
            pipe.hgetall(synd_key(gid))
        replies = self._soon(pipe, "syndication_load")
        return lambda: self._syndication(golden_ids, replies())

    def _syndication(self, golden_ids: list[str], replies: list) -> dict[str, dict[str, tuple[str, str]]]:
        result = {}
        for gid, fields in zip(golden_ids, replies):
            key = synd_key(gid)
            result[gid] = {t.decode(): tuple(self._open(v, key, t.decode()).decode().split("\x1f", 1))
                           for t, v in fields.items()}
        return result

    async def save_syndication(self, updates: dict[str, dict[str, tuple[str, str] | None]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for gid, per_target in updates.items():
            gone = [t for t, v in per_target.items() if v is None]
            kept = {t: self._seal(f"{v[0]}\x1f{v[1]}".encode(), synd_key(gid), t) for t, v in per_target.items()
                    if v is not None}
            if gone:
                pipe.hdel(synd_key(gid), *gone)
            if kept:
                pipe.hset(synd_key(gid), mapping=kept)
        if updates:
            await self._write(pipe, "syndication_save")
