"""Personal data at rest: sealed payloads (AES-GCM, associated data = where
the value lives), the keyring's rotation, and `hub rekey` on a real Redis."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from hub.config import ConfigError, load_settings
from hub.crypto import Keyring, SealError, new_key, parse_keys
from hub.ports import GoldenState, LinkRequest
from hub.testing.harness import redis_dump

OLD = ("k1", os.urandom(32))
NEW = ("k2", os.urandom(32))


def test_seal_opens_only_where_it_was_sealed():
    ring = Keyring([OLD])
    sealed = ring.seal(b"Anna Smith", b"hub:gold:{G1}|golden")
    assert b"Anna" not in sealed and ring.kid_of(sealed) == "k1"
    assert ring.open(sealed, b"hub:gold:{G1}|golden") == b"Anna Smith"
    assert ring.seal(b"Anna Smith", b"x") != ring.seal(b"Anna Smith", b"x")  # fresh nonce each time
    with pytest.raises(SealError):
        ring.open(sealed, b"hub:gold:{G2}|golden")  # moved to another key: does not open
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(SealError):
        ring.open(bytes(tampered), b"hub:gold:{G1}|golden")
    with pytest.raises(SealError):
        ring.open(b'{"plain": "json"}', b"x")


def test_rotation_new_key_first_old_still_opens():
    old_ring, rotated = Keyring([OLD]), Keyring([NEW, OLD])
    sealed = old_ring.seal(b"v", b"w")
    assert rotated.open(sealed, b"w") == b"v" and not rotated.is_current(sealed)
    assert rotated.kid_of(rotated.seal(b"v", b"w")) == "k2"
    with pytest.raises(SealError):
        Keyring([NEW]).open(sealed, b"w")  # once the old key is dropped


def test_key_setting_is_checked_without_echoing_the_key(monkeypatch):
    good = f"k2:{new_key()},k1:{new_key()}"
    assert [kid for kid, _ in parse_keys(good)] == ["k2", "k1"]
    secret = base64.b64encode(b"short-key").decode()
    monkeypatch.setenv("HUB_PII_KEYS", f"k1:{secret}")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "pii_keys" in str(error.value) and secret not in str(error.value)


def test_store_holds_only_sealed_values_and_rekey_reseals(tmp_path):
    from hub.connectors.embedded import EmbeddedRedis
    from hub.store.redis import RedisStore

    redis = EmbeddedRedis(tmp_path).start()
    try:
        store = RedisStore.from_url(redis.url, Keyring([OLD]))
        feats = {"gn": "zebulonia", "fn": "quxworthington", "em": ["zq@quxmail.example"], "ph": ["+447700900461"]}

        async def write(s):
            await s.link([LinkRequest("crm:1", "G1", feats, ["b1"], [], {})])
            await s.remember_decisions({"crm:1": b'{"outcome": "new"}'})
            await s.save([GoldenState("G1", {"crm:1": {"record": {"given_name": "Zebulonia"}}},
                                      {"golden_id": "G1", "given_name": "Zebulonia", "last_event_time": 1}, None)], [])
            await s.put({"crm:1": [{"purpose": "marketing", "channel": "email", "status": "granted", "event_time": 5}]})
            await s.save_syndication({"G1": {"pos": ("L0042", "abc")}})
            await s.put_surveys({"crm:1": [{"survey_id": "nps-q4", "score": 3, "responded_at": 5}]})

        asyncio.run(write(store))
        client = store.client
        dump = redis_dump(client)
        for value in (b"ebulonia", b"quxworth", b"quxmail", b"7700900461", b"L0042", b"marketing\""):
            assert value not in dump

        rotated = RedisStore.from_url(redis.url, Keyring([NEW, OLD]))

        async def read(s):
            return ((await s.members(["crm:1"]))["crm:1"].features, await s.golden("G1"),
                    await s.get(["crm:1"]), await s.load_syndication(["G1"]), await s.decision("crm:1"),
                    await s.get_surveys(["crm:1"]))

        before = asyncio.run(read(store))
        assert before[0] == feats and before[3] == {"G1": {"pos": ("L0042", "abc")}}
        counts = rotated.rekey(batch=2)
        assert counts == {"scanned": 7, "resealed": 7}
        assert rotated.rekey()["resealed"] == 0
        only_new = RedisStore.from_url(redis.url, Keyring([NEW]))
        assert asyncio.run(read(only_new)) == before  # nothing needs the old key any more
        with pytest.raises(SealError):
            asyncio.run(read(store))
    finally:
        redis.stop()


def test_rekey_command(tmp_path):
    import subprocess
    import sys

    from hub.connectors.embedded import EmbeddedRedis
    from hub.store.redis import RedisStore

    redis = EmbeddedRedis(tmp_path).start()
    try:
        old, new = f"k1:{new_key()}", f"k2:{new_key()}"
        env = {**os.environ, "HUB_REDIS__URL": redis.url, "HUB_PII_KEYS": old}
        store = RedisStore.from_url(redis.url, Keyring(parse_keys(old)))
        asyncio.run(store.remember_decisions({f"crm:{i}": b"{}" for i in range(7)}))
        made = subprocess.run([sys.executable, "-m", "hub", "new-key", "k9"], capture_output=True, text=True)
        assert made.returncode == 0 and parse_keys(made.stdout.strip())[0][0] == "k9"
        env["HUB_PII_KEYS"] = f"{new},{old}"
        done = subprocess.run([sys.executable, "-m", "hub", "rekey", "--batch", "3"], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "re-sealed with key k2: 7" in done.stdout
        assert asyncio.run(RedisStore.from_url(redis.url, Keyring(parse_keys(new))).decision("crm:3"))[1] == {}
    finally:
        redis.stop()
