"""The hub's Redis command packer (hub.store.redis.client.FastPacker)
puts on the wire exactly the bytes redis-py's own packer would, and fails
the same way on what redis-py refuses."""

import pytest
from redis.connection import Connection
from redis.exceptions import DataError

from hub.store.redis.client import FastPacker, client_from_url

COMMANDS = [
    ("SET", "k", 1), ("SET", "k", -7), ("SET", "k", 1.5), ("SET", "k", 1e20), ("SET", "k", -0.0),
    ("SET", "k", 12345678901234567890), ("SET", "naïve", "é€𝄞"), ("SET", b"k", b"\x00\xff"),
    ("ZADD", "z", 0.1, "m"), ("EVALSHA", "ab" * 20, 2, "k1", "k2", 3.14159265358979, ""),
    ("HSET", "h", "f", b""), ("SCRIPT LOAD", "return 1"), ("CLIENT SETNAME", "hub"),
    ("SET", "k", memoryview(b"view")), ("SET", "k", bytearray(b"array")),
]


@pytest.mark.parametrize("command", COMMANDS, ids=repr)
def test_packs_the_bytes_redis_py_would(command):
    ours = b"".join(FastPacker().pack(*command))
    theirs = b"".join(Connection().pack_command(*command))
    assert ours == theirs


@pytest.mark.parametrize("value", [None, True, object()])
def test_refuses_what_redis_py_refuses(value):
    with pytest.raises(DataError):
        FastPacker().pack("SET", "k", value)


def test_a_pipeline_round_trips_through_a_real_server(redis_url):
    client = client_from_url(redis_url)
    assert isinstance(client.connection_pool.connection_kwargs["command_packer"], FastPacker)
    pipe = client.pipeline()
    pipe.hset("hub:test:packer", mapping={"int": 3, "float": 0.25, "text": "é", "bytes": b"\x00"})
    pipe.hgetall("hub:test:packer")
    pipe.delete("hub:test:packer")
    assert pipe.execute()[1] == {b"int": b"3", b"float": b"0.25", b"text": "é".encode(), b"bytes": b"\x00"}
