"""Redis clients by URL: one server (`redis://host:port/db`, `rediss://`,
`unix:///path`) or a Redis Cluster (`redis+cluster://host:port[,host:port]`,
`rediss+cluster://` with TLS).

A cluster URL names one or more of its nodes; the client discovers the rest
and routes each command by its key's slot. A cluster has database 0 only.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis
from redis.cluster import ClusterNode, RedisCluster

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


def client_from_url(url: str, **options) -> redis.Redis | RedisCluster:
    """A client for `url`; `options` are redis-py connection options (socket_timeout, ...)."""
    parts = urlsplit(url)
    single = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if single is None:
        return redis.Redis.from_url(url, **options)
    credentials, at, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    _node(first)  # a bad address fails here, naming itself, rather than deep in redis-py
    nodes = [_node(address) for address in others]
    # redis-py's own parser reads credentials, TLS and query options from the first node's URL
    first_url = urlunsplit((single, f"{credentials}{at}{first}", parts.path, parts.query, ""))
    return RedisCluster.from_url(first_url, startup_nodes=nodes, **options)
