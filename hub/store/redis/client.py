"""Redis clients by URL: one server (`redis://host:port/db`, `rediss://`,
`unix:///path`) or a Redis Cluster (`redis+cluster://host:port[,host:port]`,
`rediss+cluster://` with TLS).

A cluster URL names one or more of its nodes; the client discovers the rest
and routes each command by its key's slot. A cluster has database 0 only.

A one-server client is a `HubRedis`: its plain commands and its pipelines
without MULTI go out on a connection the calling thread keeps to itself (see
`HubRedis`), so a round trip costs the socket and the parsing, not the pool.
"""

from __future__ import annotations

import os
import threading
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
        if transaction or shard_hint is not None:
            return super().pipeline(transaction, shard_hint)
        pipe = LeanPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.own_connection = self.own_connection
        return pipe

    def _execute_command(self, *args, **options):
        if self.connection is not None or args[0] in _PER_CONNECTION:
            return super()._execute_command(*args, **options)
        connection = self.own_connection()
        try:
            return self._send_command_parse_response(connection, args[0], *args, **options)
        except ResponseError:
            raise  # the server's answer, read whole: the connection is in step
        except _SOCKET_ERRORS:
            connection.disconnect()
            return super()._execute_command(*args, **options)
        except BaseException:
            connection.disconnect()
            raise

    def close(self) -> None:
        connection = getattr(self._own, "connection", None)
        if connection is not None:
            connection.disconnect()
        super().close()


# commands redis-py prepares per connection (HIMPORT fieldsets): its own path only
_PER_CONNECTION = frozenset(("HIMPORT", b"HIMPORT"))


class LeanPipeline(redis.client.Pipeline):
    """A pipeline without MULTI of a HubRedis: sent on the thread's own connection (see HubRedis)."""

    own_connection = None

    def execute(self, raise_on_error: bool = True):
        stack = self.command_stack
        if (not stack or self.transaction or self.explicit_transaction or self.watching or self.scripts
                or self.connection is not None or self.own_connection is None
                or any(args[0] in _PER_CONNECTION for args, _ in stack)):
            return super().execute(raise_on_error)
        connection = self.own_connection()
        try:
            # one write, however large: redis-py cuts a pipeline into pieces of 6,000 bytes and gives each large
            # value a piece of its own, a system call each (some 60 µs of CPU each on loopback TCP)
            packed = connection.pack_commands([args for args, _ in stack])
            connection.send_packed_command(packed if len(packed) == 1 else [b"".join(packed)])
            responses = []
            for args, options in stack:
                try:
                    responses.append(self.parse_response(connection, args[0], **options))
                except ResponseError as error:
                    responses.append(error)
        except _SOCKET_ERRORS:
            connection.disconnect()
            return super().execute(raise_on_error)
        except BaseException:
            connection.disconnect()  # a reply callback failed: the replies after it are still on the socket
            self.reset()
            raise
        self.reset()
        if raise_on_error:
            self.raise_first_error(stack, responses)
        return responses


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
