"""Golden-record leases in Redis (hub.ports.GoldenLeases): who masters a golden
record now, when no topic partition says so.

The staged engine gets one owner per golden record from `customer.linked`,
keyed by golden id. The fused engine (hub.engine) masters records straight
from the source partitions, so two workers, or two agents of one worker, can
meet the same golden record; each takes the record's lease before it reads it
and gives it back once its outputs are delivered, so one golden record's
versions reach `customer.golden` and the targets in order. A lease expires on
its own (a worker that died holding it blocks nobody for longer than that).
A pass refused a lease blocks in Redis until the holder gives it back
(`wait_released`), rather than sleeping a guess: the refusal notes the
waiter, the release signals it.

Leases only work if every worker takes them: a staged worker beside a fused
one in the same group would master golden records without them. So each
worker claims its group's engine here while it runs (`claim_engine`), and a
worker of the other engine is refused until the group has stopped.
"""

from __future__ import annotations

import asyncio

import redis

from hub.store.redis import scripts
from hub.store.redis.base import RedisBase
from hub.store.redis.keys import engine_key, lease_key, lease_released_key, lease_waiting_key


class RedisLeases(RedisBase):
    def __init__(self, client, keyring=None):
        super().__init__(client, keyring)
        self._lease = self._script(scripts.LEASE)
        self._release = self._script(scripts.RELEASE)
        self._blocking: redis.Redis | None = None  # a plain client over the pool: BLPOP bypasses held writes

    async def lease(self, golden_ids: list[str], owner: str, ttl_ms: int) -> list[str]:
        """Take (or renew) each record's lease for `owner`, all or none: the
        ids another owner holds, after giving back the ones this call took
        (so two callers that want overlapping sets never wait on each other)."""
        return (await self.lease_soon(golden_ids, owner, ttl_ms))()

    async def lease_soon(self, golden_ids: list[str], owner: str, ttl_ms: int):
        """`lease`, held for the next round trip (the read it is taken for carries it): a function giving the
        ids refused."""
        if not golden_ids:
            return list
        taken = self._eval_each_soon(self._lease, [((lease_key(gid), lease_waiting_key(gid)), [owner, ttl_ms])
                                                   for gid in golden_ids], "golden_lease")
        return lambda: self._refused(golden_ids, owner, taken())

    def _refused(self, golden_ids: list[str], owner: str, taken: list) -> list[str]:
        refused = [gid for gid, ok in zip(golden_ids, taken) if not ok]
        if refused:  # at once, not held for a next round trip (release): the other caller may be retrying now
            taken_here = [(self._release_keys(gid), [owner]) for gid, ok in zip(golden_ids, taken) if ok]
            if taken_here:
                self._timed("golden_lease", self._eval_each, self._release, taken_here)
        return refused

    async def release(self, golden_ids: list[str], owner: str) -> None:
        if golden_ids:
            self._eval_each_later(self._release, [(self._release_keys(gid), [owner]) for gid in golden_ids],
                                  "golden_lease")

    @staticmethod
    def _release_keys(gid: str) -> tuple[str, str, str]:
        return lease_key(gid), lease_waiting_key(gid), lease_released_key(gid)

    async def wait_released(self, golden_id: str, timeout_s: float) -> bool:
        """Wait until the holder that refused us `golden_id`'s lease gives it back (True), or `timeout_s`
        passes (False: it may still be held, or have expired). Blocks in Redis (BLPOP) on a connection of
        its own, in a thread, so the worker's other passes go on meanwhile."""
        key = lease_released_key(golden_id)
        if self.cluster:  # the node's plain client, as _eval_each uses it; a slot moved meanwhile: a timeout
            blocking = self.client.get_node_from_key(key).redis_connection
        else:
            blocking = self._blocking
            if blocking is None:
                blocking = self._blocking = redis.Redis(connection_pool=self.client.connection_pool)
        # BLPOP's timeout is in seconds, 0 meaning for ever; a millisecond at least
        try:
            reply = await asyncio.to_thread(blocking.blpop, [key], max(timeout_s, 0.001))
        except redis.RedisError:  # no reason to fail the pass: it sleeps instead, and its next lease call meets Redis
            await asyncio.sleep(timeout_s)
            return False
        return reply is not None

    def claim_engine(self, app_id: str, engine: str, ttl_s: int) -> str | None:
        """Note that `app_id`'s workers run `engine` (for `ttl_s` unless claimed again); the other engine
        if the group's running workers run that one (nothing is noted then)."""
        key = engine_key(app_id)
        while True:  # a claim is a lease held by the engine's name: taken or renewed in one script
            if self._lease(keys=[key], args=[engine, ttl_s * 1000]):
                return None
            held = self.client.get(key)
            if held is not None:
                return held.decode()
            # the other engine's claim lapsed between the script and the read: claim again
