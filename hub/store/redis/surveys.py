"""The survey store (hub.ports.SurveyStore) in Redis: each member's latest
answer per survey, under `hub:srv:{<member>}`.
"""

from __future__ import annotations

from hub.store.redis.keys import survey_key
from hub.store.redis.statements import RedisStatements


class RedisSurveyStore(RedisStatements):
    async def put_surveys(self, answers: dict[str, list[dict]]) -> dict[str, bool]:
        """Store answers per member, the latest per survey; True for each member whose answers changed
        (or hold one already)."""
        return await self._put_latest(survey_key, answers, lambda a: a["survey_id"], "responded_at", "survey_put")

    async def get_surveys(self, members: list[str]) -> dict[str, list[dict]]:
        found = await self._latest(survey_key, members, "survey_get")
        return {m: answers for m, answers in found.items() if answers}

    async def forget_surveys(self, members: list[str]) -> None:
        await self._forget(survey_key, members, "survey_forget")
