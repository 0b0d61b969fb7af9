"""The key layout holds on Redis Cluster without needing one: every key one
Lua script or one MULTI touches hashes to one slot, the slot of a key it
declares. Every store operation runs on a real (embedded) Redis while MONITOR
records each command, including those a script runs; a script or a key name
that leaves its slot fails here, as it would fail on a cluster."""

from __future__ import annotations

import asyncio
import threading

import pytest
from redis.crc import key_slot
from redis.commands.core import Script

from hub.connectors.embedded import EmbeddedRedis
from hub.crypto import Keyring, new_key, parse_keys
from hub.ports import GoldenState, LinkRequest
from hub.store.redis import RedisStore
from hub.store.redis import keys as layout
from hub.store.redis.keys import IDX, P

NAMES = ["crm:1", "pos:A-77", "G0123456789abcdef0123", "web:{x}", "a}b{c", "", "ünï:cödé", "x" * 300]
INDEX_KEYS = [layout.mem_key, layout.blk_key, layout.bv_key, layout.gm_key, layout.fwd_key, layout.fold_key,
              layout.apart_key, layout.pin_key]
INDEX_CONSTANTS = [layout.DELETED, layout.CONSTRAINTS, layout.PARAMS, layout.PARAMS_VERSION, layout.TERMS]
PER_RECORD_KEYS = [layout.gold_key, layout.cons_key, layout.lookup_key, layout.survey_key, layout.synd_key,
                   layout.lease_key, layout.lease_waiting_key, layout.lease_released_key]
# key positions of the commands the store's scripts and transactions send (a new one must be added here)
FIRST_ARG_IS_KEY = {"GET", "SET", "INCR", "INCRBY", "HGET", "HSET", "HMGET", "HGETALL", "HDEL", "HINCRBY", "SADD",
                    "SREM", "SMEMBERS", "SRANDMEMBER", "SCARD", "ZADD", "ZREM", "ZMSCORE", "RPUSH", "PEXPIRE"}


def test_the_index_tag_is_the_key_prefix():
    assert IDX == "{" + P + "}"


@pytest.mark.parametrize("name", NAMES)
def test_every_index_key_is_in_the_index_slot(name):
    slot = key_slot(IDX.encode())
    for key in [f(name) for f in INDEX_KEYS] + INDEX_CONSTANTS:
        assert key.startswith(IDX) and key_slot(key.encode()) == slot, key


def test_per_record_keys_spread_over_slots():
    for key_of in PER_RECORD_KEYS:
        assert len({key_slot(key_of(f"G{i}").encode()) for i in range(200)}) > 100, key_of.__name__


def _unquote(text: bytes) -> list[bytes]:
    """The arguments of one MONITOR line, each "..." with Redis's escapes."""
    args, i = [], 0
    escapes = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}
    while i < len(text):
        assert text[i:i + 1] == b'"', text
        i += 1
        out = bytearray()
        while text[i:i + 1] != b'"':
            if text[i:i + 1] == b"\\":
                nxt = text[i + 1:i + 2]
                if nxt == b"x":
                    out.append(int(text[i + 2:i + 4], 16))
                    i += 4
                    continue
                out += escapes.get(nxt, nxt)
                i += 2
                continue
            out += text[i:i + 1]
            i += 1
        args.append(bytes(out))
        i += 2
    return args


def _keys(args: list[bytes]) -> list[bytes]:
    name = args[0].decode().upper()
    if name in ("EVAL", "EVALSHA"):
        return args[3:3 + int(args[2])]
    if name == "DEL":
        return args[1:]
    assert name in FIRST_ARG_IS_KEY, f"{name}: add its key positions to FIRST_ARG_IS_KEY"
    return args[1:2]


class Recorder:
    """MONITOR on its own connection, until a marker command."""

    def __init__(self, client):
        self.client = client
        self.lines: list[tuple[bool, list[bytes]]] = []  # (run by a script, arguments)
        self.connection = client.connection_pool.get_connection()
        self.connection.send_command("MONITOR")
        self.connection.read_response()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            line = self.connection.read_response()
            meta, _, rest = line.partition(b"] ")
            args = _unquote(rest)
            if args == [b"ECHO", b"end-of-recording"]:
                return
            self.lines.append((meta.endswith(b" lua"), args))

    def stop(self):
        self.client.echo("end-of-recording")
        self.thread.join(timeout=10)
        self.connection.disconnect()
        self.client.connection_pool.release(self.connection)


async def _every_operation(store: RedisStore, rotated: RedisStore) -> None:
    feats = {"gn": "ann", "fn": "smith"}
    await store.link([LinkRequest("crm:1", "G1", feats, ["b1", "b2"], terms=["t1", "#gn"]),
                      LinkRequest("pos:1", "G2", feats, ["b2"], terms=["t1", "#gn"])])
    await store.link([LinkRequest("web:1", "G3", feats, ["b1", "b3"], ["G1", "G2"])])  # a merge
    await store.link([LinkRequest("crm:1", "G9", feats, ["b3"], terms=["t2", "#gn"])])  # re-linked: drops b1, b2, t1
    await store.tallies(["t1", "t2", "#gn"], ["G3", "G9"])
    await store.link([LinkRequest("x:1", "G4", feats, ["b1"], [], {"b1": 0})])  # decided on stale blocks: stops
    await store.blocks(["b1", "b2", "b3"], 50)
    await store.members(["crm:1", "nobody"])
    await store.members(["crm:1", "nobody"], with_blocks=False)
    await store.members(["crm:1", "web:1", "nobody"], with_blocks=False, with_sizes=True)
    await store.constraints(["crm:1"])  # none made yet
    await store.add_constraints("split", "crm:1", ["pos:1"])
    await store.add_constraints("link", "crm:1", ["web:1"])
    await store.add_constraints("release", "crm:1", ["x:1"])
    await store.constraints(["crm:1", "pos:1"])
    await store.move("pos:1", "G5")
    await store.move("nobody", "G5")
    await store.resolve_forward(["G1", "G2", "G3"])
    await store.pending_folds(["G3"])
    await store.survivors_and_folds(["G1", "G2", "G3"])
    await store.folded({"G3": ["G1"]})
    await store.add_tombstones({"del:1": 5})
    await store.tombstones(["del:1"])
    await store.unlink(["web:1", "del:1"])
    await store.remember_decisions({"crm:1": b'{"candidates": [{"member": "pos:1"}]}'})
    await store.forget_references(["pos:1"])
    await store.save_parameters({"comparisons": []})
    await store.load_parameters(0)
    await store.save([GoldenState("G3", {"crm:1": {"record": {}}}, {"golden_id": "G3", "last_event_time": 1})],
                     [], {"G3": (set(), {"idx-h1"})})
    store.lookup(golden_id="G3")
    store.lookup(golden_id="G1")  # merged away: the survivor
    store.lookup(index_key="idx-h1")
    await store.put({"crm:1": [{"purpose": "marketing", "channel": "email", "event_time": 5}],
                     "pos:1": [{"purpose": "marketing", "channel": "any", "event_time": 6}]})
    await store.put_surveys({"crm:1": [{"survey_id": "s1", "responded_at": 7}]})
    await store.forget(["crm:1", "pos:1"])
    assert await store.lease(["G3", "G9"], "worker-a", 5000) == []
    assert await store.lease(["G9", "G10"], "worker-b", 5000) == ["G9"]
    await store.release(["G3", "G9"], "worker-a")
    rotated.rekey(batch=2)


def test_every_script_and_transaction_stays_in_one_slot(tmp_path):
    redis = EmbeddedRedis(tmp_path).start()
    try:
        old, new = parse_keys(f"k1:{new_key()}")[0], parse_keys(f"k2:{new_key()}")[0]
        store = RedisStore.from_url(redis.url, Keyring([old]))
        rotated = RedisStore.from_url(redis.url, Keyring([new, old]))
        recorder = Recorder(store.client)
        try:
            asyncio.run(_every_operation(store, rotated))
        finally:
            recorder.stop()
        # group: each EVAL/EVALSHA with the commands its script ran, each MULTI with what it queued
        groups, current, in_multi = [], None, False
        for by_script, args in recorder.lines:
            name = args[0].upper()
            if by_script:
                assert current is not None and current[0] in (b"EVAL", b"EVALSHA"), args
                current[2].extend(_keys(args))
            elif name in (b"EVAL", b"EVALSHA"):
                current = (name, args, list(_keys(args)))
                groups.append(current)
            elif name == b"MULTI":
                current, in_multi = (name, args, []), True
                groups.append(current)
            elif name == b"EXEC":
                in_multi = False
            elif in_multi:
                current[2].extend(_keys(args))
        run = set()
        for name, args, keys in groups:
            if name != b"MULTI":
                declared = _keys(args)
                assert declared, f"a script called without a key: {args[:3]}"
                run.add(args[1].decode() if name == b"EVALSHA" else None)
            slots = {key_slot(k) for k in keys}
            assert len(slots) == 1, f"{name.decode()} touches {len(slots)} slots: {sorted(set(keys))}"
        registered = {s.sha for s in vars(store).values() if isinstance(s, Script)}
        assert registered and registered <= run, "a script this test does not run: add its operation above"
        assert any(name == b"MULTI" for name, _, _ in groups)
    finally:
        redis.stop()
