"""The stages declared once (hub.dataflow): the worker's agents, replay's
order and the followed topics all come from that table."""

from __future__ import annotations

import pkgutil

import pytest

import hub.stages
from hub import dataflow, replay
from hub.config import Settings, load_pipeline
from hub.follow import worker_input_topics
from hub.records import InMessage
from hub.store.memory_store import MemoryStore

PIPELINE = load_pipeline(None)


def test_every_stage_module_is_declared_once_and_reads_topics_the_hub_knows():
    names = [s.name for s in dataflow.STAGES]
    assert len(names) == len(set(names))
    # the schedule stage reads no topic: the worker's timers drive it, as SCHEDULES declares
    assert {*names, "schedule"} == {m.name for m in pkgutil.iter_modules(hub.stages.__path__)}
    from hub.stages.schedule import ScheduleStage
    assert all(callable(getattr(ScheduleStage, s.name)) for s in dataflow.SCHEDULES)
    known = set(PIPELINE.all_topics())
    read = [topic for s in dataflow.STAGES for topic in s.reads(PIPELINE)]
    assert len(read) == len(set(read)), "a topic is read by one stage"
    assert set(read) <= known


def test_the_topics_split_into_entry_and_internal_and_the_workers_read_all_of_them():
    entry, internal = dataflow.entry_stages(PIPELINE, "staged"), dataflow.internal_stages(PIPELINE, "staged")
    assert {s.raw_topic for s in PIPELINE.sources} <= set(entry)
    assert set(internal) == {PIPELINE.topics.canonical, PIPELINE.topics.linked, PIPELINE.topics.golden}
    assert worker_input_topics(PIPELINE, "staged") == [*entry, *internal]


def test_the_fused_engine_reads_the_sources_and_the_recompute_requests_only():
    entry, internal = dataflow.entry_stages(PIPELINE, "fused"), dataflow.internal_stages(PIPELINE, "fused")
    # consent statements and survey answers share the source events' pass (hub.engine)
    assert entry == {**{s.raw_topic: "hot" for s in PIPELINE.sources},
                     PIPELINE.topics.consent: "hot", PIPELINE.topics.survey: "hot",
                     PIPELINE.topics.erasure: "erasure", PIPELINE.topics.steward: "steward"}
    assert {s.name: s.ordered for s in dataflow.FUSED} == {
        "hot": False, "erasure": True, "steward": True, "recompute": False}
    assert internal == {PIPELINE.topics.linked: "recompute"}
    assert worker_input_topics(PIPELINE, "fused") == [*entry, *internal]
    read = [topic for s in dataflow.FUSED for topic in s.reads(PIPELINE)]
    assert len(read) == len(set(read))


def _driver(engine: str) -> replay.Replay:
    return replay.Replay(PIPELINE, {}, None, engine=engine)


def test_replay_follows_the_declared_order():
    staged, fused = _driver("staged"), _driver("fused")
    # consent and survey before the source events: their recomputes are mastered with the batch's links
    assert staged.order == ("consent", "survey", "ingest", "match", "master", "syndicate", "erasure", "steward")
    assert staged.ordered == {"erasure", "steward"}
    assert fused.order == ("hot", "erasure", "steward", "recompute")
    assert fused.ordered == {"erasure", "steward"}
    steps = dataflow.FUSED[0].build(PIPELINE, MemoryStore(), b"k", None).steps
    assert [s.name for s in steps] == ["consent", "survey", "ingest", "match", "master", "syndicate"]


def test_a_failed_record_goes_to_the_dead_letter_topic_of_its_input():
    route = dataflow.dead_letter_topics(PIPELINE)
    topics = PIPELINE.topics
    source = PIPELINE.sources[0]

    def of(topic: str) -> str:
        return route(InMessage(topic, 0, 0, b"k", b"v", 0, []))

    assert of(source.raw_topic) == source.dlq_topic
    assert of(topics.consent) == topics.consent_dlq and of(topics.steward) == topics.steward_dlq
    assert of(topics.linked) == topics.internal_dlq


@pytest.mark.parametrize("engine", ["staged", "fused"])
def test_the_worker_runs_one_agent_per_declared_stage(redis_url, tmp_path, engine):
    """A Faust agent per declared stage, but the one reading the source topics: a consumer of its own, in its
    own group (hub.connectors.kafka_consumer), over the same topics."""
    from hub.app import create_hub

    settings = Settings(state_dir=tmp_path, pii_key="a-test-key-of-enough-length", web={"port": 16067},
                        engine=engine, app_id=f"hub-{engine}")
    hub = create_hub(settings, PIPELINE, "127.0.0.1:9", redis_url)  # nothing listens there: no broker is needed
    declared = dataflow.stages(engine)
    assert set(hub.runners) == {s.name for s in declared}
    agents = {agent.name.rsplit(".", 1)[-1]: agent for agent in hub.app.agents.values()}
    own = {s.name for s in declared if s.group is not None}
    assert own == {"hot" if engine == "fused" else "ingest"}
    assert set(agents) == set(hub.runners) - own and set(hub.consumers) == own
    for s in declared:
        if s.group is None:
            assert set(agents[s.name].channel.topics) == set(s.reads(PIPELINE))
        else:
            consumer = hub.consumers[s.name]
            sources = {x.raw_topic for x in PIPELINE.sources}
            # the fused engine's source consumer takes consent statements and survey answers too
            sources |= {PIPELINE.topics.consent, PIPELINE.topics.survey} if engine == "fused" else set()
            assert set(consumer.topics) == set(s.reads(PIPELINE)) == sources
            assert consumer.group == f"hub-{engine}.sources" and consumer.seed_group == f"hub-{engine}"
            assert consumer.batch_size == settings.batch_size and consumer.batch_wait_s == settings.batch_wait_s
        assert hub.runners[s.name].is_async == s.is_async
    assert dataflow.worker_groups(f"hub-{engine}") == [f"hub-{engine}", f"hub-{engine}.sources"]


def test_a_consumer_group_runs_one_engine(redis_url, tmp_path):
    """A fused worker beside a staged one would master golden records without the leases the fused engine
    relies on: the second engine is refused while the group's workers of the first run."""
    from hub.app import ENGINE_TTL_S, create_hub
    from hub.config import ConfigError
    from hub.store.redis import RedisStore
    from hub.store.redis.keys import engine_key

    def settings(engine: str, app_id: str = "hub-one-engine") -> Settings:
        return Settings(state_dir=tmp_path, pii_key="a-test-key-of-enough-length", web={"port": 16068},
                        engine=engine, app_id=app_id)

    create_hub(settings("staged"), PIPELINE, "127.0.0.1:9", redis_url)
    create_hub(settings("staged"), PIPELINE, "127.0.0.1:9", redis_url)  # a second worker of the same engine
    with pytest.raises(ConfigError, match="HUB_ENGINE=fused: the running workers of hub-one-engine run the staged"):
        create_hub(settings("fused"), PIPELINE, "127.0.0.1:9", redis_url)
    create_hub(settings("fused", "another-group"), PIPELINE, "127.0.0.1:9", redis_url)
    client = RedisStore.from_url(redis_url).client
    assert 0 < client.ttl(engine_key("hub-one-engine")) <= ENGINE_TTL_S  # lapses once no worker renews it
    client.delete(engine_key("hub-one-engine"))  # the staged workers stopped, their claim lapsed
    create_hub(settings("fused"), PIPELINE, "127.0.0.1:9", redis_url)
