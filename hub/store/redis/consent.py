"""The consent store (hub.ports.ConsentStore) in Redis: each member's latest
statement per (purpose, channel), under `hub:cons:{<member>}`.
"""

from __future__ import annotations

from hub.store.redis.keys import cons_key
from hub.store.redis.statements import RedisStatements


class RedisConsentStore(RedisStatements):
    async def put(self, statements: dict[str, list[dict]]) -> dict[str, bool]:
        """Store statements per member; True for each member whose consent changed (or holds one already)."""
        return await self._put_latest(cons_key, statements, lambda st: f"{st['purpose']}|{st['channel']}",
                                      "event_time", "consent_put")

    async def put_later(self, statements: dict[str, list[dict]]) -> None:
        await self._put_latest(cons_key, statements, lambda st: f"{st['purpose']}|{st['channel']}",
                               "event_time", "consent_put", later=True)

    async def get(self, members: list[str]) -> dict[str, list[dict]]:
        return await self._latest(cons_key, members, "consent_get")

    async def get_soon(self, members: list[str]):
        return self._latest_soon(cons_key, members, "consent_get")

    async def forget(self, members: list[str]) -> None:
        await self._forget(cons_key, members, "consent_forget")
