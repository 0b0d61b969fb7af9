"""What every Redis port class shares: the client, sealing with the keyring,
the `_timed` metrics wrapper around each round trip, script registration
(with the cluster shebang) and the ways of calling a script (on the index's
slot, or once per key pipelined per node).

Sealed = AES-GCM with the keyring of hub.crypto, associated data "<key>|<field>":
no name, e-mail, phone or address is held in clear, and a value copied to
another key does not open. Key names hold source record keys
(<source>:<source_id>), golden ids and keyed hashes only. What the Lua
scripts must read (golden id, blocking hashes, a consent statement's time)
stays outside the sealed part.
"""

from __future__ import annotations

import contextlib
import time

import redis
from redis.cluster import RedisCluster
from redis.exceptions import AskError, MovedError, NoScriptError, TryAgainError

from hub import metrics
from hub.crypto import Keyring, default_keyring
from hub.store.redis import scripts
from hub.store.redis.client import LeanPipeline, client_from_url
from hub.store.redis.keys import IDX


# hub_redis_seconds' child per operation, looked up once (a pass makes some 27 round trips)
_TIMERS: dict = {}


class RedisBase:
    """One Redis client and keyring, shared by the port classes built over it.

    The ports are async, but this uses redis-py's synchronous client: each
    stage makes a few pipelined round trips per batch (well under a
    millisecond on a local network), and the asyncio client spends ~45 µs of
    CPU per command on timeouts and futures, against ~10 µs here."""

    def __init__(self, client: redis.Redis | RedisCluster, keyring: Keyring | None = None):
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.keyring = keyring or default_keyring()

    @classmethod
    def from_url(cls, url: str, keyring: Keyring | None = None) -> "RedisBase":
        """`redis://`, `rediss://`, `unix://` for one server; `redis+cluster://host:port[,host:port]` for a cluster."""
        return cls(client_from_url(url, decode_responses=False, socket_timeout=30, health_check_interval=30),
                   keyring)

    def _script(self, source: str):
        if self.cluster:  # Redis >= 7: the shebang makes the server refuse keys outside the declared slot
            source = ("#!lua flags=no-writes\n" if source in scripts.READ_ONLY else "#!lua\n") + source
        return self.client.register_script(source)

    def _seal(self, value: bytes, key: str, field: str) -> bytes:
        return self.keyring.seal(value, f"{key}|{field}".encode())

    def _open(self, sealed: bytes, key: str, field: str) -> bytes:
        return self.keyring.open(sealed, f"{key}|{field}".encode())

    async def close(self) -> None:
        self.client.close()

    async def ping(self) -> bool:
        return bool(self.client.ping())

    def _timed(self, operation: str, call, *args, **kwargs):
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        except Exception:
            metrics.REDIS_ERRORS.labels(operation).inc()
            raise
        finally:
            timer = _TIMERS.get(operation)
            if timer is None:
                timer = _TIMERS[operation] = metrics.REDIS_SECONDS.labels(operation)
            timer.observe(time.perf_counter() - started)

    async def _run(self, pipe, operation: str):
        return self._timed(operation, pipe.execute)

    def writes_together(self):
        """A scope (context manager) in which writes whose replies nobody reads (`_write`, `_eval_each_later`)
        and reads wanted only after another (`_soon`, `_index_soon`, `_eval_each_soon`) wait for the next
        round trip and go out with it (hub.store.redis.client.HubRedis.writes_together); on a cluster they go
        out at once."""
        together = getattr(self.client, "writes_together", None)
        return together() if together is not None else contextlib.nullcontext()

    def _soon(self, pipe, operation: str):
        """`pipe`'s replies, its commands held for the next round trip inside `writes_together` (one
        server): a function giving them, sending them first if no round trip has carried them yet. Outside,
        sent now."""
        held = pipe.later_read() if isinstance(pipe, LeanPipeline) else None
        if held is not None:
            return held.get
        replies = self._timed(operation, pipe.execute)
        return lambda: replies

    def _index_soon(self, script, args: list, operation: str):
        """`_index`, held as `_eval_each_soon` holds a call: a function giving its reply."""
        replies = self._eval_each_soon(script, [(IDX, args)], operation)
        return lambda: replies()[0]

    async def _write(self, pipe, operation: str) -> None:
        """A pipeline of writes whose replies nobody reads: held for the next round trip inside
        `writes_together` (timed with the round trip that carries it), sent now otherwise."""
        if not (isinstance(pipe, LeanPipeline) and pipe.later()):
            await self._run(pipe, operation)

    async def _index(self, script, args: list, operation: str):
        """One call of an index script, routed to the index's slot. Called
        directly rather than in a pipeline: a pipeline asks SCRIPT EXISTS
        first, a round trip per call."""
        return self._timed(operation, script, keys=[IDX], args=args)

    @staticmethod
    def _evalsha_pipelined(client, script, calls: list, positions: list[int], results: list) -> None:
        pipe = client.pipeline(transaction=False)
        for i in positions:
            key, args = calls[i]
            keys = key if isinstance(key, tuple) else (key,)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        for i, result in zip(positions, pipe.execute(raise_on_error=False)):
            results[i] = result

    def _eval_each_later(self, script, calls: list[tuple[str | tuple[str, ...], list]], operation: str) -> None:
        """`_eval_each` for calls whose replies nobody reads: inside `writes_together` on one server, held for
        the next round trip as EVAL with the script's source, which a server that lost its scripts (a restart)
        still runs."""
        if not calls:
            return
        pipe = self._eval_pipe(script, calls)
        if pipe is None or not pipe.later():
            self._timed(operation, self._eval_each, script, calls)

    def _eval_each_soon(self, script, calls: list[tuple[str | tuple[str, ...], list]], operation: str):
        """`_eval_each`, held as `_soon` is (as `_eval_each_later` sends it): a function giving its replies."""
        pipe = self._eval_pipe(script, calls) if calls else None
        held = pipe.later_read() if pipe is not None else None
        if held is not None:
            return held.get
        replies = self._timed(operation, self._eval_each, script, calls) if calls else []
        return lambda: replies

    def _eval_pipe(self, script, calls: list) -> LeanPipeline | None:
        """A pipeline of EVALs with the script's source, one per call, to be held; None on a cluster."""
        if self.cluster:
            return None
        pipe = self.client.pipeline(transaction=False)
        for key, args in calls:
            keys = key if isinstance(key, tuple) else (key,)
            pipe.eval(script.script, len(keys), *keys, *args)
        return pipe if isinstance(pipe, LeanPipeline) else None

    def _eval_each(self, script, calls: list[tuple[str | tuple[str, ...], list]]) -> list:
        """A script once per (key, args), pipelined; `key` may be a tuple of
        keys in one slot (routed by the first). A cluster client's pipeline
        refuses EVALSHA, so there each node gets a plain pipeline of its own;
        a call that meets a node without the script, or a slot that moved
        meanwhile, is made again through the cluster client, which loads
        scripts and follows redirections."""
        groups: dict[int, tuple[redis.Redis, list[int]]] = {}
        for i, (key, _) in enumerate(calls):
            first = key[0] if isinstance(key, tuple) else key
            client = self.client.get_node_from_key(first).redis_connection if self.cluster else self.client
            groups.setdefault(id(client), (client, []))[1].append(i)
        results: list = [None] * len(calls)
        for client, positions in groups.values():
            self._evalsha_pipelined(client, script, calls, positions, results)
            lost = [i for i in positions if isinstance(results[i], NoScriptError)]
            if lost:  # the server lost its scripts (a restart, SCRIPT FLUSH): loaded once, the calls sent again
                client.script_load(script.script)
                self._evalsha_pipelined(client, script, calls, lost, results)
        for i, result in enumerate(results):
            if isinstance(result, (NoScriptError, MovedError, AskError, TryAgainError)):
                key, args = calls[i]
                results[i] = script(keys=list(key) if isinstance(key, tuple) else [key], args=args)
            elif isinstance(result, Exception):
                raise result
        return results
