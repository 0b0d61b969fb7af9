"""Redis clients by URL: one server (`redis://host:port/db`, `rediss://`,
`unix:///path`) or a Redis Cluster (`redis+cluster://host:port[,host:port]`,
`rediss+cluster://` with TLS).

A cluster URL names one or more of its nodes; the client discovers the rest
and routes each command by its key's slot. A cluster has database 0 only.

A one-server client is a `HubRedis`: its plain commands and its pipelines
without MULTI go out on a connection the calling thread keeps to itself (see
`HubRedis`), so a round trip costs the socket and the parsing, not the pool.
Inside `HubRedis.writes_together()`, writes whose replies nobody reads
(`HubRedis.later`) wait for the thread's next round trip and go out with it,
and so may reads whose replies are wanted only after that round trip
(`HubRedis.later_read`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from contextvars import ContextVar
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Encoder, HiredisRespSerializer, PythonRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError, ResponseError, TimeoutError as RedisTimeoutError

# cluster scheme -> the scheme of the same URL for one node
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def _node(address: str) -> ClusterNode:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r}: a cluster node is host:port")
    return ClusterNode(host.strip("[]"), int(port))


class FastPacker:
    """Packs a command's arguments straight through hiredis. redis-py's own
    packer first runs every argument through its Encoder in a Python generator
    (~8 µs of client CPU per pipelined command, most of the hub's Redis client
    cost); hiredis encodes str, bytes, int and float itself, byte for byte as
    the Encoder would. Anything else (memoryview, bytearray, a bool or None
    that redis-py refuses, a command name with a space such as "SCRIPT LOAD")
    takes redis-py's own path, with its errors."""

    def __init__(self):
        encoder = Encoder("utf-8", "strict", False)
        self._fallback = HiredisRespSerializer(PythonRespSerializer(6000, encoder.encode).pack, encoder.encode)

    def pack(self, *args) -> list[bytes]:
        name = args[0]
        if (" " if type(name) is str else b" ") not in name:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        return self._fallback.pack(*args)


# what the socket raises (as redis-py words it): the command goes again through redis-py's own path, which
# retries with back-off on a connection from the pool
_SOCKET_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


class HubRedis(redis.Redis):
    """redis.Redis, with a lean path for what the hub does most: a stage makes
    some 27 round trips per pass, each a plain command, a script call or a
    pipeline, one after the other on the event loop's thread. redis-py spends
    about 25 µs of CPU on each around the socket: taking a connection from the
    pool (a lock, a poll of the socket for stray data, observability hooks),
    wrapping the call for retries, giving the connection back.

    Here each thread keeps one connection of its own (`own_connection`), which
    only it uses, one command or pipeline at a time: nothing can be left unread
    on it, since any error but a server's reply disconnects it. A command or a
    pipeline goes out on it as redis-py would send it and is parsed by
    redis-py's own response callbacks. If the socket fails, the connection is
    dropped and the call is made again through redis-py's own path (pool,
    retries, back-off), as redis-py's retry would send it again. MULTI/EXEC,
    WATCH and anything redis-py must prepare per connection keep redis-py's path."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._own = threading.local()

    def own_connection(self):
        """This thread's connection (made on first use, and again in a forked child)."""
        connection = getattr(self._own, "connection", None)
        if connection is None or connection.pid != os.getpid():
            connection = self._own.connection = self.connection_pool.make_connection()
        return connection

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = LeanPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.own_connection = self.own_connection
        pipe.hub_client = self
        return pipe

    # commands that wait for the thread's next round trip

    @contextlib.contextmanager
    def writes_together(self):
        """While this runs, the task's writes whose replies nobody reads (`later`), and its reads wanted only
        after another (`later_read`), wait and go out with the thread's next round trip, whatever sends it,
        before that round trip's own commands: Redis runs them in the order they were made, and no read of
        this client can overtake them. What still waits when the scope ends goes out then, in one round trip;
        if any of the scope's writes failed, its error is raised here (a held read's, to its reader)."""
        scope = _Gathering()
        token = _GATHERING.set(scope)
        try:
            yield
        finally:
            scope.open = False
            _GATHERING.reset(token)
            self.flush_later()
        if scope.error is not None:
            raise scope.error

    def later(self, commands: list) -> bool:
        """Hold `commands` (a pipeline's command stack: (args, options) pairs, replies not read) for the
        thread's next round trip: True if held, False outside `writes_together` (the caller sends them)."""
        scope = self._scope()
        if scope is None:
            return False
        self._waiting().extend((args, options, scope) for args, options in commands)
        return True

    def later_read(self, commands: list) -> HeldReplies | None:
        """Hold `commands` for the thread's next round trip, their replies kept: None outside
        `writes_together` (the caller sends them)."""
        if self._scope() is None:
            return None
        held = HeldReplies(self, len(commands))
        self._waiting().extend((args, options, held) for args, options in commands)
        return held

    def _scope(self) -> _Gathering | None:
        scope = _GATHERING.get()
        if scope is None or not scope.open or scope.thread != threading.get_ident() or self.connection is not None:
            return None
        return scope

    def _waiting(self) -> list:
        waiting = getattr(self._own, "waiting", None)
        if waiting is None:
            waiting = self._own.waiting = []
        return waiting

    def _take_waiting(self) -> list:
        waiting = getattr(self._own, "waiting", None)
        if not waiting:
            return []
        self._own.waiting = []
        return waiting

    def flush_later(self) -> None:
        """Send what waits for this thread's next round trip now."""
        waiting = self._take_waiting()
        if waiting:
            self._send_waiting(waiting)

    def _send_waiting(self, waiting: list) -> None:
        """`waiting`, alone, in one pipeline (redis-py's retrying path if the socket fails)."""
        pipe = LeanPipeline(self.connection_pool, self.response_callbacks, False, None)
        pipe.own_connection = self.own_connection
        pipe.command_stack = [(args, options) for args, options, _ in waiting]
        try:
            replies = pipe.execute(raise_on_error=False)
        except Exception as exc:  # Redis away: every scope whose writes these were is told
            replies = [exc] * len(waiting)
        _settle(waiting, replies)

    def _execute_command(self, *args, **options):
        waiting = self._take_waiting()
        if self.connection is not None or args[0] in _PER_CONNECTION:
            if waiting:
                self._send_waiting(waiting)
            return super()._execute_command(*args, **options)
        connection = self.own_connection()
        try:
            if not waiting:
                return self._send_command_parse_response(connection, args[0], *args, **options)
            packed = connection.pack_commands([*(a for a, _, _ in waiting), args])
            connection.send_packed_command([b"".join(packed)])
            _settle(waiting, _read_replies(self, connection, [(a, o) for a, o, _ in waiting]))
            waiting = []
            return self.parse_response(connection, args[0], **options)
        except ResponseError:
            raise  # the server's answer, read whole: the connection is in step
        except _SOCKET_ERRORS:
            connection.disconnect()
            if waiting:  # they may or may not have run: writes held are ones that may run twice
                self._send_waiting(waiting)
            return super()._execute_command(*args, **options)
        except BaseException as exc:
            connection.disconnect()
            _settle(waiting, [exc] * len(waiting))  # whether they ran is not known: their owners are told
            raise

    def close(self) -> None:
        self.flush_later()
        connection = getattr(self._own, "connection", None)
        if connection is not None:
            connection.disconnect()
        super().close()


# commands redis-py prepares per connection (HIMPORT fieldsets): its own path only
_PER_CONNECTION = frozenset(("HIMPORT", b"HIMPORT"))


class _Gathering:
    """One `writes_together` scope: the thread whose connection carries its writes, and the first error one
    of them met wherever it went out (it is raised when the scope ends, not to the caller whose round trip
    happened to carry it)."""

    __slots__ = ("thread", "error", "open")

    def __init__(self):
        self.thread = threading.get_ident()
        self.error: Exception | None = None
        self.open = True  # a task started inside the scope and outliving it sends its commands at once

    def settle(self, reply) -> None:
        if isinstance(reply, Exception) and self.error is None:
            self.error = reply


class HeldReplies:
    """The replies to reads held for the thread's next round trip (HubRedis.later_read)."""

    __slots__ = ("client", "count", "replies")

    def __init__(self, client: "HubRedis", count: int):
        self.client = client
        self.count = count
        self.replies: list = []

    def settle(self, reply) -> None:
        self.replies.append(reply)

    def get(self) -> list:
        """The replies, as a pipeline's execute gives them (its first error raised), sent now if no round
        trip has carried them yet."""
        if len(self.replies) < self.count:
            self.client.flush_later()
        if len(self.replies) < self.count:
            raise RedisConnectionError("the round trip carrying a held read was lost")
        for reply in self.replies:
            if isinstance(reply, Exception):
                raise reply
        return self.replies


# the scope the running task (a context variable: each asyncio task its own) gathers writes in, if any
_GATHERING: ContextVar[_Gathering | None] = ContextVar("hub_redis_gathering", default=None)


class LeanPipeline(redis.client.Pipeline):
    """A pipeline of a HubRedis: without MULTI, sent on the thread's own connection (see HubRedis); with
    it, on redis-py's path. Either way after the writes waiting for the thread's next round trip
    (HubRedis.later): without MULTI in the same round trip, ahead of its own commands."""

    own_connection = None
    hub_client: HubRedis | None = None

    def later(self) -> bool:
        """Hold this pipeline's commands, replies unread, for the thread's next round trip (HubRedis.later):
        False (nothing held) outside `writes_together`."""
        if not self._holdable() or not self.hub_client.later(self.command_stack):
            return False
        self.reset()
        return True

    def later_read(self) -> HeldReplies | None:
        """Hold this pipeline's commands for the thread's next round trip, their replies kept
        (HubRedis.later_read): None (nothing held) outside `writes_together`."""
        held = self.hub_client.later_read(self.command_stack) if self._holdable() else None
        if held is not None:
            self.reset()
        return held

    def _holdable(self) -> bool:
        return not (self.hub_client is None or self.transaction or self.explicit_transaction or self.watching
                    or self.scripts or not self.command_stack
                    or any(args[0] in _PER_CONNECTION for args, _ in self.command_stack))

    def _flush_later(self) -> None:
        if self.hub_client is not None:
            self.hub_client.flush_later()

    def immediate_execute_command(self, *args, **options):  # WATCH and what follows it
        self._flush_later()
        return super().immediate_execute_command(*args, **options)

    def execute(self, raise_on_error: bool = True):
        stack = self.command_stack
        if (not stack or self.transaction or self.explicit_transaction or self.watching or self.scripts
                or self.connection is not None or self.own_connection is None
                or any(args[0] in _PER_CONNECTION for args, _ in stack)):
            self._flush_later()
            return super().execute(raise_on_error)
        waiting = self.hub_client._take_waiting() if self.hub_client is not None else []
        connection = self.own_connection()
        try:
            # one write, however large: redis-py cuts a pipeline into pieces of 6,000 bytes and gives each large
            # value a piece of its own, a system call each (some 60 µs of CPU each on loopback TCP)
            packed = connection.pack_commands([*(args for args, _, _ in waiting), *(args for args, _ in stack)])
            connection.send_packed_command(packed if len(packed) == 1 else [b"".join(packed)])
            if waiting:
                _settle(waiting, _read_replies(self, connection, [(a, o) for a, o, _ in waiting]))
                waiting = []
            responses = _read_replies(self, connection, stack)
        except _SOCKET_ERRORS:
            connection.disconnect()
            if waiting:  # they may or may not have run: writes held are ones that may run twice
                self.hub_client._send_waiting(waiting)
            return super().execute(raise_on_error)
        except BaseException as exc:
            connection.disconnect()  # a reply callback failed: the replies after it are still on the socket
            _settle(waiting, [exc] * len(waiting))  # whether they ran is not known: their owners are told
            self.reset()
            raise
        self.reset()
        if raise_on_error:
            self.raise_first_error(stack, responses)
        return responses


def _read_replies(client, connection, stack) -> list:
    """The replies to `stack`'s commands, a server's error in its command's place."""
    replies = []
    for args, options in stack:
        try:
            replies.append(client.parse_response(connection, args[0], **options))
        except ResponseError as error:
            replies.append(error)
    return replies


def _settle(waiting: list, replies: list) -> None:
    """Each held command's reply to whom it is owed: a held read's to its HeldReplies, a held write's error
    to its scope (raised when the scope ends)."""
    for (_, _, owner), reply in zip(waiting, replies):
        owner.settle(reply)


def client_from_url(url: str, **options) -> redis.Redis | RedisCluster:
    """A client for `url`; `options` are redis-py connection options (socket_timeout, ...)."""
    parts = urlsplit(url)
    single = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if single is None:
        # a cluster client does not pass a packer on to its nodes' connections: it keeps redis-py's
        return HubRedis.from_url(url, command_packer=FastPacker(), **options)
    credentials, at, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    _node(first)  # a bad address fails here, naming itself, rather than deep in redis-py
    nodes = [_node(address) for address in others]
    # redis-py's own parser reads credentials, TLS and query options from the first node's URL
    first_url = urlunsplit((single, f"{credentials}{at}{first}", parts.path, parts.query, ""))
    return RedisCluster.from_url(first_url, startup_nodes=nodes, **options)
