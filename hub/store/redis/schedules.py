"""Golden record schedules in Redis: the activity index the retention policy
reads (when a source last confirmed each customer, and which are flagged
already) and the due times of consent verdicts and freshness decay. One key
each, no script touches them; shared by the golden store and the syndication
state (both ports schedule).
"""

from __future__ import annotations

from hub.store.redis.base import RedisBase
from hub.store.redis.keys import P


class RedisSchedules(RedisBase):
    async def inactive(self, before_ms: int, limit: int = 1000) -> list[str]:
        """Golden ids with no source event since `before_ms`, not flagged yet."""
        found = self.client.zrangebyscore(f"{P}activity", "-inf", before_ms, start=0, num=limit * 4)
        if not found:
            return []
        flagged = self.client.smismember(f"{P}retention:flagged", found)
        return [gid.decode() for gid, done in zip(found, flagged) if not done][:limit]

    async def mark_flagged(self, golden_ids: list[str]) -> None:
        if golden_ids:
            self.client.sadd(f"{P}retention:flagged", *golden_ids)

    async def schedule(self, due: dict[str, int | None], kind: str = "consent") -> None:
        """Remember when each golden record's consent verdict (kind consent) or
        freshness (kind decay) can next change."""
        if not due:
            return
        pipe = self.client.pipeline(transaction=False)
        later = {gid: at for gid, at in due.items() if at is not None}
        gone = [gid for gid, at in due.items() if at is None]
        if later:
            pipe.zadd(f"{P}{kind}:due", later)
        if gone:
            pipe.zrem(f"{P}{kind}:due", *gone)
        await self._write(pipe, f"{kind}_schedule")

    async def take_due(self, now_ms: int, limit: int = 1000, kind: str = "consent") -> list[str]:
        """Golden ids whose consent verdict may have changed by now. They are
        pushed 60 s ahead, not removed: syndicating them sets their real next
        time, and one lost on the way is retried."""
        key = f"{P}{kind}:due"
        found = self.client.zrangebyscore(key, "-inf", now_ms, start=0, num=limit)
        if found:
            self.client.zadd(key, {gid: now_ms + 60_000 for gid in found})
        return [gid.decode() for gid in found]
