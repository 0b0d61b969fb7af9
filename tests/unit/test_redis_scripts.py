"""The Redis ports' scripts when the server has lost them (a restart, SCRIPT FLUSH, a failover to a replica
that never saw them): each is loaded once and the batch's calls sent again in one pipeline, not one round
trip per call (hub.store.redis.base.RedisBase._eval_each)."""

from __future__ import annotations

import redis

from hub.store.redis.client import LeanPipeline
from test_memory_index import run


def test_scripts_the_server_lost_are_loaded_once_and_the_calls_sent_again_together(redis_store, monkeypatch):
    store = redis_store
    gids = [f"G{i}" for i in range(40)]
    assert run(store.lease(gids, "a", 60_000)) == []  # the lease scripts are loaded now
    store.client.script_flush()

    round_trips = {"pipelines": 0, "commands": 0}
    plain_command = redis.client.Redis.execute_command

    def counted(plain_execute):
        def execute(pipe, *args, **kwargs):
            round_trips["pipelines"] += 1
            return plain_execute(pipe, *args, **kwargs)
        return execute

    def command(client, *args, **kwargs):
        round_trips["commands"] += 1
        return plain_command(client, *args, **kwargs)
    for pipeline in (redis.client.Pipeline, LeanPipeline):  # redis-py's and the hub client's own
        monkeypatch.setattr(pipeline, "execute", counted(pipeline.execute))
    monkeypatch.setattr(redis.client.Redis, "execute_command", command)
    run(store.release(gids, "a"))
    assert round_trips == {"pipelines": 2, "commands": 1}  # the pipeline refused, SCRIPT LOAD, the pipeline again
    monkeypatch.undo()
    assert run(store.lease(gids, "b", 60_000)) == []  # every lease was given back
