"""The `hub` command: run a worker, run the demo, inspect the state.

A bad configuration ends with one line per problem, naming the field, and
exit status 2; never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from hub.config import ConfigError, load_pipeline, load_settings

cli = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Real-time customer master data hub: Kafka in, golden records out, per target and consent.")


def _fail(message: str) -> None:
    typer.echo(f"hub: {message}", err=True)
    raise typer.Exit(2)


def setup_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        from hub.logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@cli.command()
def run(config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML (default: HUB_CONFIG_FILE, else built-in)"),
        web_port: Optional[int] = typer.Option(None, help="HTTP port for /metrics, /health and lookups")) -> None:
    """Run a worker against the configured Kafka and Redis (embedded ones when none is configured)."""
    try:
        settings = load_settings()
        if web_port is not None:
            settings.web.port = web_port
        pipeline = load_pipeline(config or settings.config_file)
    except ConfigError as exc:
        _fail(str(exc))
    setup_logging(settings.log_level, settings.log_json)
    from hub.connectors.embedded import EmbeddedBroker, EmbeddedRedis
    from hub.connectors.kafka import ensure_topics

    started = []
    try:
        bootstrap = settings.kafka.bootstrap_servers
        if not bootstrap:
            broker = EmbeddedBroker(log_path=_state(settings) / "broker.log").start()
            started.append(broker)
            bootstrap = broker.bootstrap_servers
            typer.echo(f"hub: embedded Kafka-protocol broker (Tansu) at {bootstrap}", err=True)
        redis_url = settings.redis.url
        if not redis_url:
            redis = EmbeddedRedis(_state(settings)).start()
            started.append(redis)
            redis_url = redis.url
            typer.echo(f"hub: embedded Redis at {redis_url}", err=True)
        try:
            created = ensure_topics(bootstrap, pipeline.all_topics(), pipeline.partitions)
        except Exception as exc:
            _fail(f"cannot reach Kafka at {bootstrap}: {exc}")
        if created:
            logging.getLogger("hub").info("created topics: %s", ", ".join(created))
        _run_worker(settings, pipeline, bootstrap, redis_url)
    finally:
        for part in reversed(started):
            part.stop()


def _state(settings) -> Path:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return settings.state_dir


def _run_worker(settings, pipeline, bootstrap: str, redis_url: str) -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    import faust

    from hub.app import create_hub

    hub = create_hub(settings, pipeline, bootstrap, redis_url)
    # Faust sets up logging again when the worker starts: hand it the JSON formatter when asked for
    logging_config = None
    if settings.log_json:
        from hub.logs import json_logging_config

        logging_config = json_logging_config(settings.log_level)
    worker = faust.Worker(hub.app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False,
                          logging_config=logging_config)
    worker.execute_from_commandline()


@cli.command()
def demo(persons: int = typer.Option(300, help="Generated customers (each appears in 1-4 sources)"),
         seed: int = typer.Option(7, help="Random seed of the generated stream"),
         serve: bool = typer.Option(False, "--serve", help="Keep the hub running after the summary (Ctrl-C stops)"),
         web_port: int = typer.Option(6066, help="Worker HTTP port (metrics, lookups)")) -> None:
    """Start an embedded broker and Redis, run a worker, feed a realistic stream, and summarise."""
    from hub.demo import run_demo

    try:
        settings = load_settings()
        pipeline = load_pipeline(settings.config_file)
    except ConfigError as exc:
        _fail(str(exc))
    raise typer.Exit(run_demo(settings, pipeline, persons=persons, seed=seed, serve=serve, web_port=web_port))


@cli.command()
def check_config(config: Path = typer.Argument(..., help="Pipeline YAML to check")) -> None:
    """Check a pipeline configuration file and list its topics."""
    try:
        pipeline = load_pipeline(config)
    except ConfigError as exc:
        _fail(str(exc))
    typer.echo(f"{config}: ok: {len(pipeline.sources)} sources, {len(pipeline.targets)} targets")
    for topic in pipeline.all_topics():
        typer.echo(f"  {topic}")


@cli.command()
def resolve(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL: one record per line"),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="CSV output (default: stdout)"),
            region: str = typer.Option("GB", help="Phone numbering region for records without a country"),
            estimate: bool = typer.Option(True, help="Estimate m/u from the file (EM) before matching"),
            redis_url: Optional[str] = typer.Option(None, help="Use this Redis index (default: a fresh embedded one)"),
            config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML (match rules)")) -> None:
    """Resolve records from a file through the streaming matcher, one at a time in file order: CSV source,source_id,golden_id."""
    import sys as _sys

    from hub.resolve import resolve_file

    try:
        pipeline = load_pipeline(config)
    except ConfigError as exc:
        _fail(str(exc))
    target = open(out, "w", newline="") if out else _sys.stdout
    try:
        with open(file, encoding="utf-8", errors="replace") as source:
            report = resolve_file(source, target, pipeline, redis_url=redis_url, default_region=region,
                                  estimate=estimate)
    finally:
        if out:
            target.close()
    typer.echo(f"resolved {report.records} records into {report.golden_records} golden records "
               f"({report.rejected} lines rejected) in {report.seconds:.1f} s", err=True)


@cli.command()
def explain(source: str = typer.Argument(...), source_id: str = typer.Argument(...),
            as_json: bool = typer.Option(False, "--json", help="The stored decision as JSON")) -> None:
    """Why a source record belongs to its golden record: the match decision and its evidence (reads HUB_REDIS__URL)."""
    import orjson

    from hub.connectors.redis_store import RedisStore
    from hub.explain import explain_text

    settings = load_settings()
    if not settings.redis.url:
        _fail("set HUB_REDIS__URL to the Redis the workers use (the embedded one lives only as long as its worker)")
    store = RedisStore.from_url(settings.redis.url)
    member = f"{source}:{source_id}"
    try:
        golden_id, decision = asyncio.run(store.decision(member))
    except Exception as exc:
        _fail(f"cannot read Redis at {settings.redis.url}: {type(exc).__name__}")
    if as_json:
        typer.echo(orjson.dumps({"member": member, "golden_id": golden_id, "decision": decision}).decode())
    else:
        typer.echo(explain_text(member, golden_id, decision))
    if golden_id is None:
        raise typer.Exit(1)


steward_cli = typer.Typer(help="A data steward's decisions: split a record out, or link records together.")
cli.add_typer(steward_cli, name="steward")


def _send_steward_action(action: str, member: str, others: list[str], actor: str, reason: str | None) -> None:
    import time as _time

    from confluent_kafka import Producer

    from hub.schemas import STEWARD_ACTION, codec

    settings = load_settings()
    pipeline = load_pipeline(settings.config_file)
    if not settings.kafka.bootstrap_servers:
        _fail("set HUB_KAFKA__BOOTSTRAP_SERVERS to the broker the workers use")
    value = codec(STEWARD_ACTION).encode({"action": action, "member": member, "others": others, "actor": actor,
                                          "reason": reason, "at": int(_time.time() * 1000)})
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True})
    producer.produce(pipeline.topics.steward, value, member.encode())
    if producer.flush(30):
        _fail("the broker did not acknowledge the action")
    typer.echo(f"{action}: {member} / {', '.join(others)} sent to {pipeline.topics.steward}")


@steward_cli.command("split")
def steward_split(source: str, source_id: str,
                  apart_from: list[str] = typer.Option(None, "--from", help="<source>:<source_id> to keep it apart "
                                                       "from (default: every record it is merged with now)"),
                  actor: str = typer.Option(..., help="Who decides (kept in the audit trail)"),
                  reason: Optional[str] = typer.Option(None)) -> None:
    """Un-merge: move a record out of its golden record, and keep it apart from the others from now on."""
    from hub.connectors.redis_store import RedisStore

    member = f"{source}:{source_id}"
    others = list(apart_from or [])
    if not others:
        settings = load_settings()
        if not settings.redis.url:
            _fail("set HUB_REDIS__URL (to list the records it is merged with), or name them with --from")
        store = RedisStore.from_url(settings.redis.url)
        entry = asyncio.run(store.members([member])).get(member)
        if entry is None:
            _fail(f"{member} is not in the identity index")
        others = [m for m in asyncio.run(store.golden_members(entry.golden_id)) if m != member]
        if not others:
            _fail(f"{member} is alone in its golden record {entry.golden_id}: nothing to split")
    _send_steward_action("split", member, others, actor, reason)


@steward_cli.command("link")
def steward_link(source: str, source_id: str,
                 with_: list[str] = typer.Option(..., "--with", help="<source>:<source_id> to keep it together with"),
                 actor: str = typer.Option(..., help="Who decides (kept in the audit trail)"),
                 reason: Optional[str] = typer.Option(None)) -> None:
    """Force link: merge the golden records of these records, and keep them together from now on."""
    _send_steward_action("link", f"{source}:{source_id}", list(with_), actor, reason)


@cli.command()
def estimate(sample: int = typer.Option(50_000, help="Records of the index to estimate from"),
             dry_run: bool = typer.Option(False, "--dry-run", help="Print the estimate; do not store it")) -> None:
    """Re-estimate m and u from the records in the identity index (no labels: u from random pairs, m by EM
    over blocked candidate pairs) and store them; running workers pick them up within 10 s."""
    from hub.connectors.redis_store import RedisStore
    from hub.matching.comparisons import DEFAULT_COMPARISONS, to_json
    from hub.matching.estimate import reestimate
    from hub.matching.features import blocking_values
    from hub.resolve import MIN_RECORDS_TO_ESTIMATE

    settings = load_settings()
    if not settings.redis.url:
        _fail("set HUB_REDIS__URL to the Redis the workers use")
    store = RedisStore.from_url(settings.redis.url)
    feature_list = asyncio.run(store.sample_features(sample))
    if len(feature_list) < MIN_RECORDS_TO_ESTIMATE:
        _fail(f"{len(feature_list)} records in the index: too few to estimate (needs {MIN_RECORDS_TO_ESTIMATE})")
    comparisons, lam = reestimate(DEFAULT_COMPARISONS, feature_list, [blocking_values(f) for f in feature_list])
    for comparison in comparisons:
        levels = ", ".join(f"{label} {weight:+.1f}" for label, weight in zip(comparison.labels, comparison.weights))
        typer.echo(f"{comparison.attribute:<18} {levels}")
    typer.echo(f"estimated from {len(feature_list)} records; match share among candidate pairs {lam:.3f}")
    if not dry_run:
        version = asyncio.run(store.save_parameters({"comparisons": to_json(comparisons), "records": len(feature_list),
                                                     "match_share": lam}))
        typer.echo(f"stored as version {version}")


@cli.command()
def new_token(target: str = typer.Argument(..., help="The target the token will read")) -> None:
    """Make an API token for one target: give the token to its consumer, put the digest in the config."""
    from hub.access import new_token as make

    token, digest = make()
    typer.echo(f"token (give to the {target} consumer, shown once): {token}")
    typer.echo(f"config: under targets[name={target}] add  tokens_sha256: [{digest}]")


@cli.command()
def new_key(kid: str = typer.Argument(..., help="Id of the new key (1-32 characters, e.g. k2)")) -> None:
    """Make an AES-256 key for sealing personal data in Redis (goes first in HUB_PII_KEYS)."""
    from hub.crypto import new_key as make

    typer.echo(f"{kid}:{make()}")


@cli.command()
def rekey(batch: int = typer.Option(500, help="Keys per SCAN batch")) -> None:
    """Re-seal every value in Redis with the first key of HUB_PII_KEYS (after a rotation; safe beside workers)."""
    from hub.connectors.redis_store import RedisStore

    settings = load_settings()
    if not settings.redis.url:
        _fail("set HUB_REDIS__URL to the Redis the workers use")
    store = RedisStore.from_url(settings.redis.url)
    try:
        counts = store.rekey(batch)
    except Exception as exc:
        _fail(f"rekey stopped: {type(exc).__name__}: {exc}")
    typer.echo(f"sealed values scanned: {counts['scanned']}, re-sealed with key {store.keyring.current_kid}: "
               f"{counts['resealed']}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()


if __name__ == "__main__":
    main()
