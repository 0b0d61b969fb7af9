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

import asyncio
import time

import redis
from redis.cluster import RedisCluster
from redis.exceptions import AskError, MovedError, NoScriptError, TryAgainError

from hub import metrics
from hub.crypto import Keyring, default_keyring
from hub.store.redis import scripts
from hub.store.redis.client import client_from_url
from hub.store.redis.keys import IDX


class RedisBase:
    """One Redis client and keyring, shared by the port classes built over it.

    The ports are async, but this uses redis-py's synchronous client: each
    stage makes a few pipelined round trips per batch (well under a
    millisecond on a local network), and the asyncio client spends ~45 µs of
    CPU per command on timeouts and futures, against ~10 µs here. On one
    server, the pipelines and index scripts asked for in one turn of the event
    loop go as one round trip (`_joined`): reads of different concerns that a
    stage gathers cost one wait, not one each."""

    def __init__(self, client: redis.Redis | RedisCluster, keyring: Keyring | None = None):
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.keyring = keyring or default_keyring()
        # round trips asked for in this turn of the event loop, sent as one pipeline (`_joined`)
        self._asked: list = []

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
            metrics.REDIS_SECONDS.labels(operation).observe(time.perf_counter() - started)

    async def _run(self, pipe, operation: str):
        """A pipeline's commands, in one round trip with whatever else is asked in the same turn of the event
        loop (see `_joined`); its results, or the first error among them."""
        if self.cluster or pipe.transaction:
            return self._timed(operation, pipe.execute)
        return await self._joined(operation, pipe.command_stack, _first_error_raised)

    async def _index(self, script, args: list, operation: str):
        """One call of an index script, routed to the index's slot, in one round trip with whatever else is
        asked in the same turn of the event loop (`_joined`). Sent as EVALSHA: redis-py's own pipelined
        scripts ask SCRIPT EXISTS first, a round trip per call; a server that does not hold the script
        (restarted, flushed) gets it loaded by a direct call."""
        if self.cluster:
            return self._timed(operation, script, keys=[IDX], args=args)
        pipe = self.client.pipeline(transaction=False)
        pipe.evalsha(script.sha, 1, IDX, *args)

        def finish(results: list):
            (result,) = results
            if isinstance(result, NoScriptError):
                return script(keys=[IDX], args=args)
            if isinstance(result, Exception):
                raise result
            return result
        return await self._joined(operation, pipe.command_stack, finish)

    async def _each(self, operation: str, script, calls: list[tuple[str | tuple[str, ...], list]]) -> list:
        """`_eval_each`, in one round trip with whatever else is asked in the same turn of the event loop
        (`_joined`); on a cluster, `_eval_each` itself."""
        if self.cluster:
            return self._timed(operation, self._eval_each, script, calls)
        pipe = self.client.pipeline(transaction=False)
        for key, args in calls:
            keys = key if isinstance(key, tuple) else (key,)
            pipe.evalsha(script.sha, len(keys), *keys, *args)

        def finish(results: list) -> list:
            for i, result in enumerate(results):
                if isinstance(result, NoScriptError):  # a server that does not hold it yet: loaded by a direct call
                    key, args = calls[i]
                    results[i] = script(keys=list(key) if isinstance(key, tuple) else [key], args=args)
                elif isinstance(result, Exception):
                    raise result
            return results
        return await self._joined(operation, pipe.command_stack, finish)

    async def _joined(self, operation: str, commands: list, finish):
        """Round trips asked for in one turn of the event loop go as one pipeline, so reads of different
        concerns that a stage gathers (`asyncio.gather`) cost one round trip, not one each; a call made alone
        goes alone, a turn later. `finish(results)` turns this call's share of the results into its
        answer (or raises). One server only: a cluster client routes each call itself (`_run`)."""
        future = asyncio.get_running_loop().create_future()
        self._asked.append((operation, commands, finish, future))
        if len(self._asked) == 1:
            asyncio.get_running_loop().call_soon(self._send_asked)
        return await future

    def _send_asked(self) -> None:
        asked, self._asked = self._asked, []
        pipe = self.client.pipeline(transaction=False)
        for _, commands, _, _ in asked:
            pipe.command_stack.extend(commands)
        started = time.perf_counter()
        try:
            results = pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection: every caller sees it (the runner retries the batch)
            for operation, _, _, future in asked:
                metrics.REDIS_ERRORS.labels(operation).inc()
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            elapsed = time.perf_counter() - started
            for operation, _, _, _ in asked:
                metrics.REDIS_SECONDS.labels(operation).observe(elapsed)
        at = 0
        for operation, commands, finish, future in asked:
            share, at = results[at:at + len(commands)], at + len(commands)
            if future.done():  # its caller was cancelled meanwhile
                continue
            try:
                future.set_result(finish(share))
            except Exception as exc:
                metrics.REDIS_ERRORS.labels(operation).inc()
                future.set_exception(exc)

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
            pipe = client.pipeline(transaction=False)
            for i in positions:
                key, args = calls[i]
                keys = key if isinstance(key, tuple) else (key,)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            for i, result in zip(positions, pipe.execute(raise_on_error=False)):
                results[i] = result
        for i, result in enumerate(results):
            if isinstance(result, (NoScriptError, MovedError, AskError, TryAgainError)):
                key, args = calls[i]
                results[i] = script(keys=list(key) if isinstance(key, tuple) else [key], args=args)
            elif isinstance(result, Exception):
                raise result
        return results


def _first_error_raised(results: list) -> list:
    """As `Pipeline.execute()` does: the results, unless one of them is an error."""
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results
