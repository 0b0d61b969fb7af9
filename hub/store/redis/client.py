"""Redis clients by URL: one server (`redis://host:port/db`, `rediss://`,
`unix:///path`) or a Redis Cluster (`redis+cluster://host:port[,host:port]`,
`rediss+cluster://` with TLS).

A cluster URL names one or more of its nodes; the client discovers the rest
and routes each command by its key's slot. A cluster has database 0 only.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Encoder, HiredisRespSerializer, PythonRespSerializer

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


def client_from_url(url: str, **options) -> redis.Redis | RedisCluster:
    """A client for `url`; `options` are redis-py connection options (socket_timeout, ...)."""
    parts = urlsplit(url)
    single = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if single is None:
        # a cluster client does not pass a packer on to its nodes' connections: it keeps redis-py's
        return redis.Redis.from_url(url, command_packer=FastPacker(), **options)
    credentials, at, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    _node(first)  # a bad address fails here, naming itself, rather than deep in redis-py
    nodes = [_node(address) for address in others]
    # redis-py's own parser reads credentials, TLS and query options from the first node's URL
    first_url = urlunsplit((single, f"{credentials}{at}{first}", parts.path, parts.query, ""))
    return RedisCluster.from_url(first_url, startup_nodes=nodes, **options)
