"""Every Redis crash window of the match and master stages, in-process against
a real Redis: the server "dies" after the first k commands of a batch have
been applied (k = 0, 1, 2 ... every command the batch sends, the last one
applied or not), the stage sees a connection error, and the runner retries the
batch, as `hub.runner.StageRunner` does. Afterwards the index and the golden
store must hold what one clean run leaves.

With `appendfsync always` a killed Redis keeps exactly a prefix of the
commands it executed, which is what is modelled here: a pipeline is cut
between two commands, a MULTI/EXEC or a script is all or nothing."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from hub.config import load_pipeline
from hub.records import REASON_HEADER, InMessage
from hub.schemas import CONSENT_EVENT, CUSTOMER_EVENT, ERASURE_REQUEST, STEWARD_ACTION, SURVEY_RESPONSE, codec
from hub.stages import settled
from hub.stages.consent import ConsentStage
from hub.stages.erasure import ErasureStage
from hub.stages.ingest import IngestStage
from hub.stages.master import MasterStage
from hub.stages.match import MatchStage
from hub.stages.steward import StewardStage
from hub.stages.survey import SurveyStage
from hub.stages.syndicate import SyndicateStage
from hub.store.redis.client import HubRedis, LeanPipeline, _settle

NOW = int(time.time() * 1000) - 60_000
ANNA = {"given_name": "Annabel", "family_name": "Smithson", "birth_date": "1984-03-02"}
BOB = {"given_name": "Robert", "family_name": "Kowalczyk", "birth_date": "1971-11-20"}


def raw(source: str, sid: str, at: int, **fields) -> InMessage:
    value = codec(CUSTOMER_EVENT).encode({"source": source, "source_id": sid, "event_time": at, **fields})
    return InMessage(f"raw.{source}", 0, at, f"{source}:{sid}".encode(), value, NOW)


# customers already mastered before the batch under test
HISTORY = [
    [raw("crm", "C1", NOW, **ANNA, emails=[{"address": "anna@x.example"}])],
    [raw("pos", "P1", NOW + 1, **ANNA, phones=[{"number": "07911 123456"}])],
    [raw("ecommerce", "E1", NOW + 2, **ANNA, emails=[{"address": "anna@x.example"}],
         phones=[{"number": "07911 123456"}])],
    [raw("crm", "C2", NOW + 3, **BOB, emails=[{"address": "bob@y.example"}]),
     raw("contact_center", "L2", NOW + 4, **BOB, phones=[{"number": "07700 900123"}])],
    [raw("pos", "P3", NOW + 5, given_name="Carla", family_name="Ortiz", emails=[{"address": "carla@z.example"}])],
]
# the batch a crash interrupts: an update of a record in a three-member golden
# record, a deletion, a merge of two golden records, and a new customer
BATCH = [
    raw("crm", "C1", NOW + 10, **ANNA, emails=[{"address": "anna@x.example"}],
        addresses=[{"line1": "1 Station Road", "city": "Leeds", "postcode": "LS1 4DY", "country": "GB"}]),
    raw("pos", "P3", NOW + 11, op="delete"),
    raw("ecommerce", "E2", NOW + 12, **BOB, emails=[{"address": "bob@y.example"}],
        phones=[{"number": "07700 900123"}]),
    raw("ecommerce", "E4", NOW + 13, given_name="Dmitri", family_name="Volkov"),
]
MEMBERS = ["crm:D1", "pos:D2", "ecommerce:D3", "crm:C1", "pos:P1", "ecommerce:E1", "crm:C2", "contact_center:L2", "pos:P3", "ecommerce:E2", "ecommerce:E4"]


class Crash:
    """Lets `budget` Redis commands through, then fails every call as a dead
    server would; a pipeline that crosses the budget applies its first commands.
    With `reply_lost`, the call whose last command uses up the budget is applied
    and still fails (the server died before answering)."""

    def __init__(self):
        self.budget: int | None = None
        self.reply_lost = False
        self.sent = 0

    def take(self, commands: int) -> tuple[int, bool]:
        """(how many of these commands are applied, whether the call fails)."""
        self.sent += commands
        if self.budget is None:
            return commands, False
        applied = min(commands, self.budget)
        self.budget -= applied
        return applied, applied < commands or (self.reply_lost and self.budget == 0)


@pytest.fixture
def crash(monkeypatch):
    state = Crash()
    plain_command = redis.client.Redis.execute_command

    def crashing(plain_execute):
        def execute(pipe, raise_on_error=True):
            # commands held for this round trip (HubRedis.writes_together) go out ahead of the pipeline's own
            # (a MULTI sends them first, apart: its own execute does)
            waiting = pipe.hub_client._take_waiting() \
                if getattr(pipe, "hub_client", None) and not pipe.transaction else []
            held = [(a, o) for a, o, _ in waiting]
            if state.budget is not None and state.budget == 0:
                pipe.reset()
                _settle(waiting, [redis.ConnectionError("crash")] * len(waiting))
                raise redis.ConnectionError("crash: the server is gone")
            stack = pipe.command_stack = [*held, *pipe.command_stack]
            if pipe.transaction:  # MULTI/EXEC: all or nothing
                applied, fails = state.take(len(stack))
                if applied < len(stack):
                    pipe.reset()
                    raise redis.ConnectionError("crash: the server is gone")
                result = plain_execute(pipe, raise_on_error)
            else:
                applied, fails = state.take(len(stack))
                pipe.command_stack = stack[:applied]
                result = plain_execute(pipe, False) if applied else []
                replies = [*result, *[redis.ConnectionError("crash")] * (len(stack) - len(result))]
                _settle(waiting, replies[:len(held)])  # the held reads' replies to their readers
                result = replies[len(held):]
                if raise_on_error and not fails:
                    pipe.raise_first_error(stack[len(held):], result)
            if fails:
                raise redis.ConnectionError("crash: the server died mid-pipeline")
            return result
        return execute

    def command(client, *args, **options):
        if isinstance(client, HubRedis) and getattr(client._own, "waiting", None):
            client.flush_later()  # the held writes first, counted as the round trip carrying them would
        if state.budget is not None and state.budget == 0:
            raise redis.ConnectionError("crash: the server is gone")
        applied, fails = state.take(1)
        result = plain_command(client, *args, **options)
        if fails:
            raise redis.ConnectionError("crash: the server died before answering")
        return result

    # redis-py's pipelines, and the hub client's own (hub.store.redis.client.LeanPipeline), which send
    # without redis-py's execute
    for pipeline in (redis.client.Pipeline, LeanPipeline):
        monkeypatch.setattr(pipeline, "execute", crashing(pipeline.execute))
    monkeypatch.setattr(redis.client.Redis, "execute_command", command)
    return state


def _stages(url, leased: bool = False):
    """`leased`: the master as the fused engine runs it (hub.engine), under golden-record leases, its
    writes fenced by them; a retry is the same owner's (the runner's), so it finds its leases again."""
    from hub.store.redis import RedisStore

    store = RedisStore.from_url(url)
    store.client.flushall()
    pipeline = load_pipeline(None)
    leases = {"leases": store, "lease_owner": "worker-1"} if leased else {}
    return IngestStage(pipeline), MatchStage(pipeline, store, b"k"), MasterStage(pipeline, store, store, store, b"k",
                                                                                  store, **leases), store


def _as_input(messages, topic):
    return [InMessage(m.topic, 0, i, m.key, m.value, NOW) for i, m in enumerate(messages) if m.topic == topic]


async def _retried(process, crash: Crash):
    """The stage's output once it succeeds; the first attempt meets the crash."""
    try:
        return await process()
    except redis.ConnectionError:
        crash.budget = None  # Redis is back: the runner retries the whole batch
        return await process()


def _state(store) -> dict:
    """What the index and the golden store hold, version counters left out."""
    members = {m: e.golden_id for m, e in asyncio.run(store.members(MEMBERS)).items()}
    golden = {}
    for key in store.client.scan_iter(match="hub:gold:*"):
        gid = key.decode().split("{", 1)[1].rstrip("}")
        record = asyncio.run(store.golden(gid))
        assert record is not None, f"golden {gid}: contributions without a golden record"
        golden[gid] = {k: v for k, v in record.items() if k not in ("version", "updated_at")}
    return {"members": members, "golden": golden, "count": asyncio.run(store.golden_count())}


def _steward(action: str, member: str, others: list[str]) -> InMessage:
    value = codec(STEWARD_ACTION).encode({"action": action, "member": member, "others": others,
                                          "actor": "steward-1", "reason": None, "at": NOW})
    return InMessage("steward.actions", 0, 0, member.encode(), value, NOW)


def _erasure(source: str, source_id: str) -> InMessage:
    value = codec(ERASURE_REQUEST).encode({"source": source, "source_id": source_id, "golden_id": None,
                                           "requester": "dpo", "requested_at": NOW})
    return InMessage("erasure.requests", 0, 0, f"{source}:{source_id}".encode(), value, NOW)


def _consent(member: str, purpose: str, status: str) -> InMessage:
    source, source_id = member.split(":")
    value = codec(CONSENT_EVENT).encode({"source": source, "source_id": source_id, "statement": {
        "purpose": purpose, "channel": "email", "status": status, "event_time": NOW + 20}})
    return InMessage("consent.events", 0, 0, member.encode(), value, NOW)


def _survey(member: str, survey_id: str, score: int) -> InMessage:
    source, source_id = member.split(":")
    value = codec(SURVEY_RESPONSE).encode({"source": source, "source_id": source_id, "survey_id": survey_id,
                                           "score": score, "responded_at": NOW + 20})
    return InMessage("survey.events", 0, 0, member.encode(), value, NOW)


# scenario -> (the stage that makes the linked records, its input)
SCENARIOS = {
    "consent": ("consent", [_consent("crm:C1", "marketing", "granted"), _consent("crm:C2", "marketing", "granted"),
                            _consent("pos:P3", "analytics", "denied")]),
    "survey": ("survey", [_survey("crm:C1", "nps", 9), _survey("contact_center:L2", "nps", 3)]),
    "source events": ("match", BATCH),
    "steward split": ("steward", [_steward("split", "crm:C1", ["pos:P1", "ecommerce:E1"])]),
    "steward link": ("steward", [_steward("link", "crm:C2", ["pos:P3"])]),
    "erasure": ("erasure", [_erasure("crm", "C2")]),
}


def _run(url, crash: Crash, scenario: str, crashed: str | None, budget: int | None,
         leased: bool = False) -> tuple[dict, int]:
    ingest, match, master, store = _stages(url, leased)
    pipeline = load_pipeline(None)
    upstream = {"match": match, "steward": StewardStage(pipeline, store),
                "erasure": ErasureStage(pipeline, store, store, store), "consent": ConsentStage(pipeline, store, store),
                "survey": SurveyStage(pipeline, store, store)}
    first, batch = SCENARIOS[scenario]
    sent = {}

    async def step(name, call):
        if name == crashed:
            crash.sent, crash.budget = 0, budget
        try:
            return await _retried(call, crash)
        finally:
            if name == crashed:
                sent[name], crash.budget = crash.sent, None

    async def flow():
        for history in HISTORY:
            canonical = _as_input(ingest.process(history, NOW).messages, "customer.canonical")
            linked = _as_input((await match.process(canonical, NOW)).messages, "customer.linked")
            await settled(master.process(linked, NOW))
        stage = upstream[first]
        if first in ("consent", "survey"):
            made = await step(first, lambda: stage.process(batch, NOW))
        elif first == "match":
            batch_in = _as_input(ingest.process(batch, NOW).messages, "customer.canonical")
            made = await step(first, lambda: stage.process(batch_in, NOW))
        else:
            made = await step(first, lambda: stage.process(batch))
        linked = _as_input(made.messages, "customer.linked")
        mastered = await step("master", lambda: settled(master.process(linked, NOW)))
        # what the golden topic ends with: the retry sends everything, the crashed attempt delivered nothing
        return {m.key.decode(): m.value for m in mastered.messages if m.topic == "customer.golden"}

    topic = asyncio.run(flow())
    return {**_state(store), "golden topic": topic}, sent.get(crashed, 0)


def _difference(clean: dict, state: dict) -> str:
    if state["members"] != clean["members"]:
        return f"index {state['members']} != {clean['members']}"
    if state["golden"].keys() != clean["golden"].keys():
        return f"golden ids {sorted(state['golden'])} != {sorted(clean['golden'])}"
    for gid, record in clean["golden"].items():
        if state["golden"][gid] != record:
            keys = [k for k in record if record[k] != state["golden"][gid].get(k)]
            return f"golden {gid} differs in {keys}: {[state['golden'][gid].get(k) for k in keys]}"
    if state["golden topic"] != clean["golden topic"]:
        return "the golden topic's values differ"
    return f"count {state['count']} != {clean['count']}"


@pytest.mark.parametrize("reply_lost", [False, True], ids=["cut", "reply-lost"])
@pytest.mark.parametrize(("scenario", "crashed"), [
    ("source events", "match"), ("source events", "master"), ("steward split", "steward"),
    ("steward split", "master"), ("steward link", "steward"), ("steward link", "master"), ("erasure", "master"),
    ("consent", "consent"), ("consent", "master"), ("survey", "survey")])
def test_a_batch_retried_after_redis_died_at_any_command_leaves_what_a_clean_run_leaves(
        redis_url, crash, scenario, crashed, reply_lost):
    clean, commands = _run(redis_url, crash, scenario, crashed, None)
    assert commands > 0
    crash.reply_lost = reply_lost
    differing = []
    for budget in range(commands + 1):
        try:
            state, _ = _run(redis_url, crash, scenario, crashed, budget)
        except Exception as exc:  # noqa: BLE001 - a failed retry is a finding, not a test error
            differing.append((budget, repr(exc)[:200]))
            continue
        if state != clean:
            differing.append((budget, _difference(clean, state)))
    assert not differing, f"{crashed}: a crash after these commands (of {commands}) leaves another state: {differing}"


def _sweep(crash: Crash, clean: dict, commands: int, run) -> None:
    """`run(budget)` after a crash at every command, the connection cut and the reply lost: each leaves `clean`."""
    differing = []
    for reply_lost in (False, True):
        crash.reply_lost = reply_lost
        for budget in range(commands + 1):
            try:
                state, _ = run(budget)
            except Exception as exc:  # noqa: BLE001 - a failed retry is a finding, not a test error
                differing.append((reply_lost, budget, repr(exc)[:200]))
                continue
            if state != clean:
                differing.append((reply_lost, budget, _difference(clean, state)))
    assert not differing, f"a crash after these commands (of {commands}) leaves another state: {differing}"


@pytest.mark.parametrize("scenario", ["source events", "steward split", "erasure", "consent"])
def test_a_leased_master_retried_after_redis_died_at_any_command_leaves_what_a_clean_run_leaves(
        redis_url, crash, scenario):
    """The same sweep for the master under leases (the fused engine): the lease script, the re-read under
    the leases and the fenced writes add commands a crash can fall between."""
    clean, commands = _run(redis_url, crash, scenario, "master", None, leased=True)
    unleased, _ = _run(redis_url, crash, scenario, "master", None)
    assert clean == unleased  # leases change who may write, never what is written
    _sweep(crash, clean, commands, lambda budget: _run(redis_url, crash, scenario, "master", budget, leased=True))


# scenario -> the fused engine's pass that takes its input (hub.dataflow.FUSED)
FUSED_PASSES = {"source events": "hot", "source merge": "hot", "steward split": "steward",
                "steward link": "steward", "erasure": "erasure", "consent": "hot", "survey": "hot"}
# Dana's two records, one with her email, one with her phone: names alone never merge; then one that carries
# both: her two golden records merge
DANA = {"given_name": "Dana", "family_name": "Whitcombe"}
DANA_APART = [[raw("crm", "D1", NOW + 6, **DANA, emails=[{"address": "dana@w.example"}])],
              [raw("pos", "D2", NOW + 7, **DANA, phones=[{"number": "07911 222333"}])]]
SOURCE_MERGE = [raw("ecommerce", "D3", NOW + 14, **DANA, emails=[{"address": "dana@w.example"}],
                    phones=[{"number": "07911 222333"}])]


def _run_fused(url, crash: Crash, scenario: str, budget: int | None, monkeypatch) -> tuple[dict, int]:
    """The scenario as the fused engine runs it: one pass from its input to golden records and target slices,
    no linked record in between. A crash loses the pass's outputs unless it came after their delivery (in
    the after-delivery work); the worker then starts again (a new process: new stages, another lease owner,
    once the dead one's leases have expired) and the batch is redelivered."""
    from hub import dataflow
    from hub.store.redis import RedisStore

    store = RedisStore.from_url(url)
    store.client.flushall()
    pipeline = load_pipeline(None)
    by_name = {s.name: s for s in dataflow.stages("fused")}
    monkeypatch.setattr(time, "time", lambda: NOW / 1000)  # what a pass stamps with the clock is the same each run

    def worker(name: str):
        return by_name[name].build(pipeline, store, b"k", None)

    golden_topic: dict[str, bytes | None] = {}

    async def attempt(chain, batch):
        output = await chain.process(batch)
        golden_topic.update({m.key.decode(): m.value for m in output.messages if m.topic == "customer.golden"})
        if output.after_delivery is not None:  # delivered: the worker may still die before this is done
            await output.after_delivery()

    async def flow():
        hot = worker("hot")
        for history in [*HISTORY, *DANA_APART] if scenario == "source merge" else HISTORY:
            await attempt(hot, history)
        golden_topic.clear()
        name = FUSED_PASSES[scenario]
        chain = worker(name)
        batch = SOURCE_MERGE if scenario == "source merge" else SCENARIOS[scenario][1]
        crash.sent, crash.budget = 0, budget
        try:
            await attempt(chain, batch)
        except redis.ConnectionError:
            crash.budget = None
            for key in store.client.scan_iter(match="hub:lease:*"):  # the dead worker's leases expire
                store.client.delete(key)
            monkeypatch.setattr(dataflow, "_WORKER_OWNER", {})  # the new process's owner: nothing claimed
            await attempt(worker(name), batch)
        finally:
            sent, crash.budget = crash.sent, None
        return sent

    sent = asyncio.run(flow())
    return {**_state(store), "golden topic": golden_topic}, sent


@pytest.mark.parametrize("scenario", list(FUSED_PASSES))
def test_a_fused_pass_redelivered_after_its_worker_died_at_any_command_leaves_what_a_clean_run_leaves(
        redis_url, crash, scenario, monkeypatch):
    """Where no linked record survives a crash (the fused engine), whatever the pass decided before it died
    must be decided again from its redelivered input: a merge folded in, an erasure, a split."""
    clean, commands = _run_fused(redis_url, crash, scenario, None, monkeypatch)
    assert commands > 0 and clean["golden topic"]
    if scenario == "source merge":  # a golden record merged away: its tombstone is what a crash could lose
        assert None in clean["golden topic"].values() and clean["members"]["crm:D1"] == clean["members"]["pos:D2"]
    _sweep(crash, clean, commands, lambda budget: _run_fused(redis_url, crash, scenario, budget, monkeypatch))


def test_the_scenarios_change_what_they_should(redis_url, crash):
    """The sweeps above compare against these clean runs: they must do what they are named for."""
    before, _ = _run(redis_url, crash, "source events", None, None)
    assert len(before["golden"]) == 3 and before["count"] == 3  # Anna, Bob (E2 merged his two), Dmitri
    assert "pos:P3" not in before["members"]
    split, _ = _run(redis_url, crash, "steward split", None, None)
    assert split["members"]["crm:C1"] != split["members"]["pos:P1"] == split["members"]["ecommerce:E1"]
    assert [g["members"] for g in split["golden"].values()].count(["crm:C1"]) == 1
    linked, _ = _run(redis_url, crash, "steward link", None, None)
    assert linked["members"]["crm:C2"] == linked["members"]["pos:P3"]
    erased, _ = _run(redis_url, crash, "erasure", None, None)
    assert "crm:C2" not in erased["members"] and not any("crm:C2" in g["members"] for g in erased["golden"].values())
    consented, _ = _run(redis_url, crash, "consent", None, None)
    assert sum(len(g["consents"]) for g in consented["golden"].values()) == 3
    surveyed, _ = _run(redis_url, crash, "survey", None, None)
    assert surveyed["golden"] != consented["golden"] and len(surveyed["golden topic"]) == 2


def test_a_target_record_delivered_before_a_crash_is_tombstoned_when_its_golden_record_goes(redis_url):
    """The syndicate stage delivered a new golden record to the targets and
    died before saving that it had; redelivered, its batch now ends with the
    record's deletion (a merge, an erasure): every target gets the tombstone."""
    ingest, match, master, store = _stages(redis_url)
    pipeline = load_pipeline(None)
    syndicate = SyndicateStage(pipeline, store)

    async def flow():
        canonical = _as_input(ingest.process(HISTORY[0], NOW).messages, "customer.canonical")
        linked = _as_input((await match.process(canonical, NOW)).messages, "customer.linked")
        golden = _as_input((await settled(master.process(linked, NOW))).messages, "customer.golden")
        topics: dict[tuple[str, bytes], bytes | None] = {}
        first = await syndicate.process(golden, NOW)  # delivered; the worker dies before `after_delivery`
        topics.update({(m.topic, m.key): m.value for m in first.messages})
        gone = InMessage("customer.golden", 0, 1, golden[0].key, None, NOW, [(REASON_HEADER, b"golden_merged")])
        again = await syndicate.process([*golden, gone], NOW)
        topics.update({(m.topic, m.key): m.value for m in again.messages})
        await again.after_delivery()
        return first, topics

    first, topics = asyncio.run(flow())
    delivered = {t for t, _ in topics}
    assert len([m for m in first.messages if m.value is not None]) >= 2  # the record reached several targets
    held = {topic: key for (topic, key), value in topics.items() if value is not None}
    assert not held, f"targets still hold the deleted golden record: {held}"
    assert delivered <= {t.output_topic for t in pipeline.targets}


def test_a_golden_record_created_before_a_crash_and_deleted_in_the_redelivered_batch_leaves_nothing(redis_url, crash):
    """The master began saving a new golden record and died; redelivered, its
    batch now also holds the record's deletion (batches form differently after
    a restart): whatever the crash left, nothing of the customer remains."""
    ingest, match, master, store = _stages(redis_url)

    async def linked(messages):
        canonical = _as_input(ingest.process(messages, NOW).messages, "customer.canonical")
        return _as_input((await match.process(canonical, NOW)).messages, "customer.linked")

    async def attempt(budget: int | None):
        store.client.flushall()
        upsert = await linked(HISTORY[0])
        crash.sent, crash.budget = 0, budget
        try:
            await settled(master.process(upsert, NOW))
        except redis.ConnectionError:
            pass
        crash.budget = None
        deletion = await linked([raw("crm", "C1", NOW + 1000, op="delete")])  # the source deleted it meanwhile
        await settled(master.process([*upsert, *deletion], NOW))
        return crash.sent

    commands = asyncio.run(attempt(None))
    left = []
    for budget in range(commands + 1):
        asyncio.run(attempt(budget))
        if asyncio.run(store.golden_count()) or list(store.client.scan_iter(match="hub:gold:*")):
            left.append(budget)
    assert not left, f"a crash after these commands (of {commands}) leaves the deleted customer counted: {left}"
