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

from hub.collector import pace_collector
from hub.config import ConfigError, load_pipeline, load_settings

# plain help: the rich layout shows every flag as taking a value (`--serve <bool>`)
cli = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Real-time customer master data hub: Kafka in, golden records out, per target and consent.")


def _print_version(asked: bool) -> None:
    if asked:
        from hub import __version__

        typer.echo(f"hub {__version__}")
        raise typer.Exit()


@cli.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit")) -> None:
    """Real-time customer master data hub: Kafka in, golden records out, per target and consent."""


def _fail(message: str) -> None:
    typer.echo(f"hub: {message}", err=True)
    raise typer.Exit(2)


def _settings():
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc))


def _secret(settings) -> bytes:
    """The workers' identifier-hashing key (HUB_PII_KEY); one line and exit 2 when unset."""
    try:
        return settings.pii_secret()
    except ConfigError as exc:
        _fail(str(exc))


def _redis_store(settings, missing: str = "set HUB_REDIS__URL to the Redis the workers use"):
    """The workers' Redis, opened with their keys; one line and exit 2 when either is not configured."""
    from hub.store.redis import RedisStore

    if not settings.redis.url:
        _fail(missing)
    _secret(settings)
    return RedisStore.from_url(settings.redis.url, settings.keyring())


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
    try:
        _state(settings)  # the worker keeps its Faust data there, embedded or not
    except OSError as exc:
        _fail(f"HUB_STATE_DIR {settings.state_dir}: cannot create it: {exc.strerror or exc}")
    if not settings.pii_key:
        if settings.redis.url:
            _secret(settings)
        # the embedded Redis keeps its data in the state directory: so does its key
        from hub.crypto import local_key

        settings.pii_key = local_key(_state(settings))
    setup_logging(settings.log_level, settings.log_json)
    from hub.connectors.embedded import EmbeddedBroker, EmbeddedRedis
    from hub.connectors.kafka import ConnectFailed, ensure_topics

    started = []
    try:
        bootstrap = settings.kafka.bootstrap_servers
        if not bootstrap and settings.kafka.secured:
            _fail(f"HUB_KAFKA__SECURITY_PROTOCOL={settings.kafka.security_protocol} needs HUB_KAFKA__BOOTSTRAP_SERVERS "
                  "(the embedded broker listens in plain text on loopback only)")
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
        kafka = _kafka(settings, bootstrap)
        try:
            created = ensure_topics(kafka, pipeline.all_topics(), pipeline.partitions)
        except ConnectFailed as exc:
            _fail(_kafka_error(exc))
        except Exception as exc:
            _fail(f"cannot reach Kafka at {bootstrap}: {exc}")
        if created:
            logging.getLogger("hub").info("created topics: %s", ", ".join(created))
        from hub.connectors.registry import ConnectorError

        try:
            _run_worker(settings, pipeline, bootstrap, redis_url)
        except (ConnectorError, ConfigError) as exc:
            _fail(str(exc))
    finally:
        for part in reversed(started):
            part.stop()


def _configured(config: Optional[Path], redis: bool = False):
    """Settings and the pipeline, or one line per problem; with `redis`, HUB_REDIS__URL must be set."""
    try:
        settings = load_settings()
        pipeline = load_pipeline(config or settings.config_file)
    except ConfigError as exc:
        _fail(str(exc))
    if redis and not settings.redis.url:
        _fail("set HUB_REDIS__URL to the Redis the workers use")
    return settings, pipeline


def _kafka(settings, bootstrap: str | None = None):
    """The connection every Kafka client of this command uses: servers plus TLS/SASL (HUB_KAFKA__*)."""
    from hub.connectors.kafka_security import KafkaSecurityError, connection, describe

    if not (bootstrap or settings.kafka.bootstrap_servers):
        _fail("set HUB_KAFKA__BOOTSTRAP_SERVERS to the broker the workers use")
    try:
        kafka = connection(settings.kafka, bootstrap)
    except KafkaSecurityError as exc:
        _fail(str(exc))
    if settings.kafka.secured:
        logging.getLogger("hub").info("Kafka at %s: %s", kafka, describe(settings.kafka))
    return kafka


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
    pace_collector(settings.gc_threshold)
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
            redis_url: Optional[str] = typer.Option(
                None, help="Match into the Redis identity index at this URL, with the workers' HUB_PII_KEY "
                           "(default: an index in this process's memory, no Redis; same golden ids)"),
            config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML (match rules)")) -> None:
    """Resolve records from a file through the streaming matcher, one at a time in file order: CSV source,source_id,golden_id.

    The identity index is held in memory unless --redis-url is given."""
    import sys as _sys

    from hub.resolve import resolve_file

    try:
        pipeline = load_pipeline(config)
    except ConfigError as exc:
        _fail(str(exc))
    pace_collector(_settings().gc_threshold)
    target = open(out, "w", newline="") if out else _sys.stdout
    try:
        with open(file, encoding="utf-8", errors="replace") as source:
            report = resolve_file(source, target, pipeline, redis_url=redis_url, default_region=region,
                                  estimate=estimate)
    except ConfigError as exc:
        _fail(str(exc))
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

    from hub.explain import explain_text

    settings = _settings()
    store = _redis_store(settings, "set HUB_REDIS__URL to the Redis the workers use (the embedded one lives only "
                                   "as long as its worker)")
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


def _steward(settings, token: str | None) -> str:
    """The authenticated steward a token belongs to (hub user token NAME), or exit."""
    from hub.store.redis.client import client_from_url
    from hub.workbench.auth import Accounts, may

    token = token or os.environ.get("HUB_STEWARD_TOKEN")
    if not token:
        _fail("give your steward token: --token-file FILE or HUB_STEWARD_TOKEN "
              "(an admin makes one: hub user token NAME)")
    if not settings.redis.url:
        _fail("set HUB_REDIS__URL to the Redis the workers use (steward tokens are checked there)")
    user = Accounts(client_from_url(settings.redis.url)).token_user(token)
    if user is None:
        _fail("unknown or revoked steward token")
    if not may(user["role"], "decide"):
        _fail(f"{user['name']} is a {user['role']}: only stewards and admins decide")
    return user["name"]


def _token_from(path: Optional[Path]) -> str | None:
    return path.read_text().strip() if path else None


_TOKEN_FILE = typer.Option(None, "--token-file", help="File holding your steward token (else HUB_STEWARD_TOKEN)")


def _send_steward_action(action: str, member: str, others: list[str], actor: str, reason: str | None) -> None:
    import time as _time

    from confluent_kafka import Producer

    from hub.schemas import STEWARD_ACTION, codec

    settings = load_settings()
    pipeline = load_pipeline(settings.config_file)
    kafka = _kafka(settings)
    value = codec(STEWARD_ACTION).encode({"action": action, "member": member, "others": others, "actor": actor,
                                          "reason": reason, "at": int(_time.time() * 1000)})
    producer = Producer(kafka.config(**{"enable.idempotence": True}))
    producer.produce(pipeline.topics.steward, value, member.encode())
    if producer.flush(30):
        _fail("the broker did not acknowledge the action")
    typer.echo(f"{action}: {member} / {', '.join(others)} sent to {pipeline.topics.steward} as {actor}")


@steward_cli.command("split")
def steward_split(source: str, source_id: str,
                  apart_from: list[str] = typer.Option(None, "--from", help="<source>:<source_id> to keep it apart "
                                                       "from (default: every record it is merged with now)"),
                  token_file: Optional[Path] = _TOKEN_FILE,
                  reason: Optional[str] = typer.Option(None)) -> None:
    """Un-merge: move a record out of its golden record, and keep it apart from the others from now on."""
    settings = _settings()
    actor = _steward(settings, _token_from(token_file))
    member = f"{source}:{source_id}"
    others = list(apart_from or [])
    if not others:
        store = _redis_store(settings, "set HUB_REDIS__URL (to list the records it is merged with), "
                                       "or name them with --from")
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
                 token_file: Optional[Path] = _TOKEN_FILE,
                 reason: Optional[str] = typer.Option(None)) -> None:
    """Force link: merge the golden records of these records, and keep them together from now on."""
    actor = _steward(load_settings(), _token_from(token_file))
    _send_steward_action("link", f"{source}:{source_id}", list(with_), actor, reason)


@steward_cli.command("release")
def steward_release(source: str, source_id: str,
                    from_: list[str] = typer.Option(..., "--from", help="<source>:<source_id> whose constraint "
                                                    "with this record is lifted"),
                    token_file: Optional[Path] = _TOKEN_FILE,
                    reason: Optional[str] = typer.Option(None)) -> None:
    """Lift what a steward decided between these records (kept apart or together); no record moves."""
    actor = _steward(load_settings(), _token_from(token_file))
    _send_steward_action("release", f"{source}:{source_id}", list(from_), actor, reason)


@cli.command()
def estimate(sample: int = typer.Option(50_000, help="Records of the index to estimate from"),
             dry_run: bool = typer.Option(False, "--dry-run", help="Print the estimate; do not store it"),
             keep_thresholds: bool = typer.Option(False, "--keep-thresholds",
                                                  help="Store m and u only; workers keep the configured thresholds")
             ) -> None:
    """Re-estimate m and u from the records in the identity index (no labels: u from random pairs, m by EM
    over blocked candidate pairs), and the merge threshold that follows from them (posterior match
    probability 0.9), and store them; running workers pick them up within 10 s. The old and new values go to
    the audit trail (hub history --config), so HUB_KAFKA__BOOTSTRAP_SERVERS is needed unless --dry-run."""
    from hub.matching.comparisons import to_json
    from hub.matching.estimate import estimate_parameters
    from hub.matching.features import blocking_values
    from hub.resolve import MIN_RECORDS_TO_ESTIMATE

    settings = _settings()
    if not settings.redis.url:
        _fail("set HUB_REDIS__URL to the Redis the workers use")
    pipeline = load_pipeline(settings.config_file)
    kafka = None if dry_run else _kafka(settings)  # new parameters are recorded in the audit trail
    store = _redis_store(settings)
    feature_list = asyncio.run(store.sample_features(sample))
    if len(feature_list) < MIN_RECORDS_TO_ESTIMATE:
        _fail(f"{len(feature_list)} records in the index: too few to estimate (needs {MIN_RECORDS_TO_ESTIMATE})")
    configured = pipeline.match.comparison_rules()
    found = estimate_parameters(configured, feature_list, [blocking_values(f) for f in feature_list])
    for comparison in found.comparisons:
        levels = ", ".join(f"{label} {weight:+.1f}" for label, weight in zip(comparison.labels, comparison.weights))
        typer.echo(f"{comparison.attribute:<18} {levels}")
    upper = round(found.upper_threshold(), 4)
    typer.echo(found.describe())
    if not dry_run:
        from hub.audit_trail import record_parameters
        from hub.config_audit import parameters_summary
        from hub.connectors.kafka import KafkaSink

        stored = {"comparisons": to_json(found.comparisons), "records": len(feature_list),
                  "match_share": found.match_share}
        if not keep_thresholds:
            stored["upper_threshold"] = upper
        old_version, old = asyncio.run(store.load_parameters(-1))
        rules = pipeline.match

        def described(params: dict | None, version: int) -> dict:
            params = params or {"comparisons": to_json(configured)}
            upper_now = params.get("upper_threshold")
            return parameters_summary(params["comparisons"],
                                      rules.upper_threshold if upper_now is None else upper_now,
                                      rules.lower_threshold if upper_now is None else min(rules.lower_threshold,
                                                                                          upper_now), version)

        version = asyncio.run(store.save_parameters(stored))
        typer.echo(f"stored as version {version}")
        sink = KafkaSink(kafka)
        sink.setup()
        try:
            record_parameters(settings, pipeline, sink, described(old, old_version if old else 0),
                              described(stored, version), len(feature_list))
        except Exception as exc:
            _fail(f"version {version} stored, but not recorded in the audit trail: {exc}")
        typer.echo(f"recorded in the audit trail ({pipeline.topics.audit}, hub history --config)")


def _kafka_error(exc: Exception) -> str:
    """One line: a KafkaException's own message (why the broker refused, when it did), else the exception."""
    args = getattr(exc, "args", ())
    if args and hasattr(args[0], "str"):
        return args[0].str()
    return f"{type(exc).__name__}: {exc}"


def _parse_time(text: str) -> int:
    """Epoch milliseconds, or an ISO-8601 time (UTC when no offset is given)."""
    from datetime import datetime, timezone

    if text.isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


@cli.command()
def history(golden_id: Optional[str] = typer.Argument(None, help="The golden id, or a source record "
                                                    "<source>:<source_id> (its golden record found in "
                                                    "HUB_REDIS__URL)"),
            at: Optional[str] = typer.Option(None, "--at", help="Print the golden record as it was at this time "
                                             "(ISO 8601 or epoch ms), rebuilt from the audit trail"),
            as_json: bool = typer.Option(False, "--json", help="The audit events (or, with --at, the record) as JSON"),
            config: bool = typer.Option(False, "--config", help="Changes of the pipeline configuration (recorded by "
                                        "workers as they start) and of the match parameters (hub estimate)")) -> None:
    """Every change of a golden record, with its cause and each attribute before and after (reads the audit topic;
    sealed events are opened with HUB_PII_KEYS). With --config: configuration and match parameter changes."""
    import orjson

    from hub import history as golden_history
    from hub.audit_trail import config_key
    from hub.config_audit import describe_events
    from hub.connectors.kafka import read_topic
    from hub.crypto import Keyring, SealError
    from hub.schemas import AUDIT, codec
    from hub.topic_seal import open_record

    if config == (golden_id is not None):
        _fail("give a golden id, or --config")
    settings = load_settings()
    pipeline = load_pipeline(settings.config_file)
    kafka = _kafka(settings)
    if golden_id is not None and ":" in golden_id:
        member = golden_id
        golden_id = _golden_id_of(settings, member)
        if golden_id is None:
            _fail(f"{member} is not in the identity index")
    try:
        at_ms = _parse_time(at) if at else None
    except ValueError:
        _fail(f"--at {at!r}: not an ISO-8601 time or epoch milliseconds")
    topic = pipeline.topics.audit
    keys = {config_key(settings.app_id)} if config else {golden_id.encode(), golden_history.erased_id(golden_id).encode()}
    try:
        records = read_topic(kafka, topic, keys)
    except Exception as exc:
        _fail(f"cannot read {topic} from {kafka}: {_kafka_error(exc)}")
    audit = codec(AUDIT)
    keyring = Keyring.from_settings(settings.pii_keys, settings.pii_key)
    try:
        events = [open_record(keyring, AUDIT, audit.decode(value), topic, key) for key, value in records if value]
    except SealError as exc:
        _fail(f"an audit event on {topic} does not open: {exc} (HUB_PII_KEYS must hold every key that sealed "
              "the audit trail)")
    if config:
        if as_json:
            for event in sorted({e["audit_id"]: e for e in events}.values(), key=lambda e: (e["at"], e["audit_id"])):
                typer.echo(orjson.dumps(event).decode())
        else:
            typer.echo(describe_events(events))
        raise typer.Exit(0 if events else 1)
    if at_ms is not None:
        state = golden_history.rebuild(events, golden_id, at_ms)
        if state is None:
            typer.echo(f"{golden_id} did not exist at {at}", err=True)
            raise typer.Exit(1)
        typer.echo(orjson.dumps(state, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode())
    elif as_json:
        for event in golden_history.ordered(events, golden_id):
            typer.echo(orjson.dumps(event).decode())
    else:
        typer.echo(golden_history.describe(events, golden_id))
    if not events:
        raise typer.Exit(1)


def _golden_id_of(settings, member: str) -> str | None:
    """The golden record a source record (<source>:<source_id>) belongs to now, from the identity index."""
    store = _redis_store(settings, f"set HUB_REDIS__URL to find the golden record of {member} (or give a golden id)")
    try:
        entry = asyncio.run(store.members([member])).get(member)
    except Exception as exc:
        _fail(f"cannot read Redis at {settings.redis.url}: {type(exc).__name__}")
    return entry.golden_id if entry is not None else None


@cli.command()
def tail(topic: str = typer.Argument(..., help="The topic, e.g. mastered.pos, customer.golden, audit, dlq.crm"),
         grep: Optional[str] = typer.Option(None, "--grep", help="Only records whose key or value contain this text"),
         customer: Optional[str] = typer.Option(None, "--customer", help="Only records keyed by the golden record of "
                                                "this source record, <source>:<source_id> (found in HUB_REDIS__URL; "
                                                "waits until it is mastered)"),
         count: Optional[int] = typer.Option(None, "--count", "-n", help="Stop after this many records"),
         timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop after this many seconds (exit status 1 "
                                                 "if fewer than --count were shown)")) -> None:
    """The records of a topic, one line each, from the beginning and then as they arrive (Ctrl-C stops):
    JSON as it is, the hub's Avro decoded, withdrawals with their reason, dead letters with theirs."""
    import time as _time

    from hub.crypto import Keyring
    from hub.tail import describe, records

    settings = load_settings()
    bootstrap = _kafka(settings)
    golden_key: list[bytes] = []  # the customer's golden id, once the identity index knows it
    pending: list = []  # records read before then: looked at again once it is known
    checked = 0.0

    # golden records, audit events and canonical records (also those linked records carry) shown opened when
    # the workers' key is at hand (hub.topic_seal)
    keyring = Keyring.from_settings(settings.pii_keys, settings.pii_key) if settings.pii_keys or settings.pii_key \
        else None
    try:
        canonical_topic = load_pipeline(settings.config_file).topics.canonical
    except ConfigError:
        canonical_topic = "customer.canonical"

    def line(record) -> str | None:
        _, _, _, key, value, _ = record
        if customer is not None and key != golden_key[0]:
            return None
        shown_line = describe(*record, keyring, canonical_topic)
        if grep is None or grep in (key or b"").decode(errors="replace") or grep.encode() in (value or b"") \
                or grep in shown_line:
            return shown_line
        return None

    shown = 0
    deadline = None if timeout is None else _time.monotonic() + timeout
    try:
        for record in records(bootstrap, topic, deadline, stop=lambda: count is not None and shown >= count):
            batch = [record] if record is not None else []
            if customer is not None and not golden_key:
                pending.extend(batch)
                del pending[:-10_000]
                if _time.monotonic() - checked < 0.5:
                    continue
                checked = _time.monotonic()
                found = _golden_id_of(settings, customer)
                if found is None:
                    continue
                golden_key.append(found.encode())
                batch, pending = pending, []
            for item in batch:
                text = line(item) if count is None or shown < count else None
                if text is not None:
                    typer.echo(text)
                    shown += 1
    except LookupError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass
    if count is not None and shown < count:
        typer.echo(f"hub: {shown} of {count} records within {timeout} s", err=True)
        raise typer.Exit(1)


@cli.command()
def replay(batch: int = typer.Option(500, help="Input records per batch (part of what makes two replays identical)"),
           commit: bool = typer.Option(True, help="Move the workers' consumer group to the end of every topic read"),
           force: bool = typer.Option(False, help="Replay into a Redis that already holds golden records")) -> None:
    """Rebuild the state from the input topics (sources, consent, erasure, steward, surveys) into an empty Redis,
    in one order that depends only on what the topics hold: the same golden ids and records every time.
    Stop the workers first."""
    from hub.dataflow import worker_groups
    from hub.replay import IndexNotEmpty, replay as run_replay

    settings = _settings()
    try:
        pipeline = load_pipeline(settings.config_file)
    except ConfigError as exc:
        _fail(str(exc))
    setup_logging(settings.log_level, settings.log_json)
    kafka = _kafka(settings)
    if not settings.redis.url:
        _fail("set HUB_REDIS__URL to the (empty) Redis to rebuild into")
    pace_collector(settings.gc_threshold)
    try:
        counts = asyncio.run(run_replay(pipeline, kafka, settings.redis.url, _secret(settings),
                                        settings.app_id, batch, settings.kafka.linger_ms, commit, force,
                                        settings.keyring(), settings.seal_topics, settings.engine))
    except IndexNotEmpty as exc:
        _fail(f"{exc} (--force to replay anyway)")
    inputs = sum(counts.inputs.values())
    typer.echo(f"replayed {inputs} input records in {counts.seconds:.1f} s "
               f"({inputs / max(counts.seconds, 1e-9):.0f}/s): "
               + ", ".join(f"{topic} {n}" for topic, n in sorted(counts.inputs.items())))
    typer.echo("wrote " + ", ".join(f"{topic} {n}" for topic, n in sorted(counts.outputs.items())))
    if commit:
        typer.echo(f"consumer groups {', '.join(worker_groups(settings.app_id))} moved to the end of every topic "
                   "the stages read")


@cli.command()
def reindex_lookups() -> None:
    """Add every golden record's identifiers to the lookup index (reads and writes HUB_REDIS__URL): for golden
    records saved before the lookup index existed. Safe to run while workers run, and more than once."""
    from hub.lookup import index_keys

    settings = _settings()
    store = _redis_store(settings)
    secret = settings.pii_secret()
    done = 0
    batch: dict[str, set[str]] = {}
    for golden in store.all_golden():
        batch[golden["golden_id"]] = index_keys(golden, secret)
        if len(batch) >= 1000:
            store.add_lookup_keys(batch)
            done += len(batch)
            batch = {}
    store.add_lookup_keys(batch)
    typer.echo(f"indexed {done + len(batch)} golden records")


@cli.command()
def lookup_server(host: str = typer.Option("127.0.0.1", help="Address to listen on"),
                  port: int = typer.Option(6070, help="HTTP port"),
                  config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML (targets, tokens)")) -> None:
    """Serve the lookup API (GET /targets/{target}/lookup) beside the workers, from the Redis they use."""
    from aiohttp import web

    from hub.lookup_api import server_app

    settings, pipeline = _configured(config, redis=True)
    store = _redis_store(settings)
    setup_logging(settings.log_level, settings.log_json)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    audit = None
    from hub.audit_trail import AccessAudit

    if AccessAudit.wanted(pipeline):  # a target audits its reads: events go to the audit topic
        from confluent_kafka import KafkaException

        from hub.connectors.kafka import check_connection

        kafka = _kafka(settings)
        try:
            check_connection(kafka)
        except KafkaException as exc:
            _fail(_kafka_error(exc))
        audit = AccessAudit(pipeline, kafka, settings.app_id)
    app = server_app(pipeline, store, settings.pii_secret(), settings.web, audit)
    typer.echo(f"hub: lookup API on http://{host}:{port}/targets/<target>/lookup", err=True)
    web.run_app(app, host=host, port=port, access_log=None, print=None)


@cli.command()
def load(file: str = typer.Argument(..., help="A file (JSONL, or CSV with --mapping) or a source connector URL"),
         source: str = typer.Option(..., "--source", "-s", help="The source the events belong to (writes raw.<source>)"),
         format: Optional[str] = typer.Option(None, "--format", help="jsonl or csv (default: by the file's suffix)"),
         mapping: Optional[Path] = typer.Option(None, "--mapping", "-m", help="YAML: CSV column -> CustomerEvent field"),
         value_format: str = typer.Option("json", "--value-format", help="json, or avro (the source's schema registry "
                                          "when it names one, else the hub's schema ids)"),
         follow: bool = typer.Option(False, "--follow", help="Then wait until the workers have mastered every record, "
                                     "and count what their ingest stage rejected, by reason"),
         timeout: Optional[float] = typer.Option(None, "--timeout", help="With --follow: give up after this many "
                                                 "seconds (exit status 1)"),
         config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML")) -> None:
    """Initial load: every record of a file (or of any source connector URL) onto raw.<source>, then exit.
    Lines that cannot become an event go to dlq.<source> with the reason and line number. Progress on stderr
    (a bar on a terminal, a line every few seconds otherwise)."""
    import yaml

    from confluent_kafka import KafkaException

    from hub.config import ConnectorConfig
    from hub.connectors.registry import ConnectorError
    from hub.connectors.runner import ConnectorFailed
    from hub.load import LOAD_BATCH, load as run_load

    try:
        settings = load_settings()
        pipeline = load_pipeline(config or settings.config_file)
        if pipeline.source(source) is None:
            _fail(f"--source {source}: not a source of the pipeline ({[s.name for s in pipeline.sources]})")
        options: dict = {}
        url = file
        if "://" not in file:
            path = Path(file)
            if not path.is_file():
                _fail(f"{file}: no such file")
            url = path.resolve().as_uri()
            if format:
                options["format"] = format
        if mapping is not None:
            options["mapping"] = yaml.safe_load(mapping.read_text()) or {}
        connector_config = ConnectorConfig(name=f"load-{source}", source=source, url=url, options=options,
                                           **{"value.format": value_format, "batch.size": LOAD_BATCH})
        kafka = _kafka(settings)
        report = run_load(connector_config, pipeline, kafka, group=settings.app_id,
                          follow_records=follow, follow_timeout_s=timeout, engine=settings.engine)
    except KafkaException as exc:
        _fail(_kafka_error(exc))
    except TimeoutError as exc:
        typer.echo(f"hub: {exc}", err=True)
        raise typer.Exit(1)
    except (ConfigError, ConnectorError, ConnectorFailed, ValueError, OSError) as exc:
        _fail(str(exc))
    for line in report.lines(pipeline.source(source).raw_topic, connector_config.dlq_topic):
        typer.echo(line)


@cli.command()
def export(out: Path = typer.Argument(..., help="The file to write: .jsonl, or .parquet (pip install 'cmdm-hub[parquet]')"),
           format: Optional[str] = typer.Option(None, "--format", help="jsonl or parquet (default: by the suffix)"),
           target: list[str] = typer.Option(None, "--target", "-t", help="Add what this target may see of each "
                                            "record (repeat for several)"),
           all_targets: bool = typer.Option(False, "--all-targets", help="Add every target's slice"),
           config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML (targets, consent)")) -> None:
    """Every golden record with the source records it is built from (and, if asked, each target's slice) to
    JSONL or Parquet, streaming, with progress on stderr (reads HUB_REDIS__URL). The file holds personal data."""
    from hub.export import ExportError, export as run_export
    from hub.progress import Progress

    settings, pipeline = _configured(config, redis=True)
    store = _redis_store(settings)
    targets = [t.name for t in pipeline.targets] if all_targets else list(target or ())
    try:
        total = asyncio.run(store.golden_count())
        progress = Progress(f"exporting to {out.name}", total=total, unit="golden records")
        report = run_export(store, pipeline, out, format=format, targets=targets, on_progress=progress.update)
        progress.update(report.golden_records)
        progress.finish()
    except ExportError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{out}: {exc.strerror or exc}")
    typer.echo(f"exported {report.golden_records} golden records with {report.members} source records to {out} "
               f"in {report.seconds:.1f} s ({report.golden_records / max(report.seconds, 1e-9):,.0f}/s)")


@cli.command()
def connect(only: list[str] = typer.Option(None, "--only", help="Run only these connectors (default: all)"),
            config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML"),
            metrics_port: Optional[int] = typer.Option(None, "--metrics-port",
                                                       help="Serve Prometheus /metrics on this port (default: off)"),
            metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="Address for --metrics-port")) -> None:
    """Run the pipeline's connectors (its `connectors:` section) until stopped: sinks fed from their
    target's topic, sources (CDC) writing raw.<source>. Exit status 1 if a connector stopped on an error."""
    import signal
    import threading

    from confluent_kafka import KafkaException

    from hub.connectors.kafka import ensure_topics
    from hub.connectors.registry import ConnectorError
    from hub.connectors.runner import run_all

    try:
        settings = load_settings()
        pipeline = load_pipeline(config or settings.config_file)
    except ConfigError as exc:
        _fail(str(exc))
    setup_logging(settings.log_level, settings.log_json)
    unknown = sorted(set(only or ()) - {c.name for c in pipeline.connectors})
    if unknown or not pipeline.connectors:
        _fail(f"no connector named {unknown}" if unknown else "the pipeline configures no connectors")
    kafka = _kafka(settings)
    if metrics_port is not None:
        # connectors run in their own process: without this, hub_connector_* never reach Prometheus
        from hub.limits import BackgroundServer
        from hub.limits import metrics_app

        try:
            BackgroundServer(metrics_app(settings.web), metrics_host, metrics_port).start()
        except OSError as exc:
            _fail(f"--metrics-port {metrics_port}: {exc.strerror or exc}")
    try:
        ensure_topics(kafka, pipeline.all_topics(), pipeline.partitions)
    except KafkaException as exc:
        _fail(_kafka_error(exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        outcome = run_all(pipeline, kafka, list(only or ()), stop,
                          session_timeout_ms=int(settings.kafka.session_timeout_s * 1000))
    except ConnectorError as exc:
        _fail(str(exc))
    failed = {name: exc for name, exc in outcome.items() if exc is not None}
    for name, exc in failed.items():
        typer.echo(f"hub: connector {name} stopped: {exc}", err=True)
    raise typer.Exit(1 if failed else 0)


@cli.command()
def new_token(target: str = typer.Argument(..., help="The target the token will read (or the source it will post to)")) -> None:
    """Make an API token for one target or source: give the token to its user, put the digest in the config."""
    from hub.access import new_token as make

    token, digest = make()
    typer.echo(f"token (give to the {target} consumer, shown once): {token}")
    typer.echo(f"config: under targets[name={target}] (reads) or sources[name={target}] (POST /sources/{target}/events)"
               f" add  tokens_sha256: [{digest}]")


@cli.command()
def new_key(kid: Optional[str] = typer.Argument(None, help="Id of the new key (1-32 characters, e.g. k2): "
                                                "prints kid:key for HUB_PII_KEYS; without it, a key for HUB_PII_KEY")
            ) -> None:
    """Make a random 256-bit key: for HUB_PII_KEY (hashes identifiers), or with a key id, for sealing personal
    data in Redis (goes first in HUB_PII_KEYS)."""
    from hub.crypto import new_key as make

    typer.echo(f"{kid}:{make()}" if kid else make())


@cli.command()
def rekey(batch: int = typer.Option(500, help="Keys per SCAN batch"),
          topics: bool = typer.Option(False, "--topics", help="Also count, per key id, the sealed values on the "
                                      "internal topics (customer.golden, audit, customer.canonical, customer.linked): "
                                      "Kafka records are not re-sealed, "
                                      "so a key must stay in HUB_PII_KEYS while a topic holds values it sealed")) -> None:
    """Re-seal every value in Redis with the first key of HUB_PII_KEYS (after a rotation; safe beside workers)."""
    settings = _settings()
    store = _redis_store(settings)
    try:
        counts = store.rekey(batch)
    except Exception as exc:
        _fail(f"rekey stopped: {type(exc).__name__}: {exc}")
    typer.echo(f"sealed values scanned: {counts['scanned']}, re-sealed with key {store.keyring.current_kid}: "
               f"{counts['resealed']}")
    if topics:
        _report_topic_keys(settings, store.keyring)


def _report_topic_keys(settings, keyring) -> None:
    from hub.connectors.kafka import MergedReader
    from hub.schemas import AUDIT, CANONICAL, GOLDEN, LINKED
    from hub.topic_seal import key_ids

    pipeline = load_pipeline(settings.config_file)
    kafka = _kafka(settings)
    held = set(keyring.kids)
    for topic, schema in ((pipeline.topics.golden, GOLDEN), (pipeline.topics.audit, AUDIT),
                          (pipeline.topics.canonical, CANONICAL), (pipeline.topics.linked, LINKED)):
        try:
            latest: dict = {}
            for message in MergedReader(kafka, [topic], timeout_s=600):
                # a compacted topic keeps the last value per key; every audit record stays until retention
                latest[message.key if schema == GOLDEN else (message.partition, message.offset)] = message.value
            found = key_ids(schema, latest.values())
        except Exception as exc:
            _fail(f"cannot read {topic} from {kafka}: {_kafka_error(exc)}")
        counts = ", ".join(f"{kid or 'in clear'} {n}" for kid, n in sorted(found.items(), key=lambda i: str(i[0])))
        typer.echo(f"{topic}: {counts or 'no values'}")
        for kid in sorted(k for k in found if k is not None):
            if kid not in held:
                typer.echo(f"  key {kid} sealed {found[kid]} values but is not in HUB_PII_KEYS: they do not open")
            elif kid != keyring.current_kid:
                typer.echo(f"  key {kid} still seals {found[kid]} values: keep it in HUB_PII_KEYS until "
                           f"{'newer values replace them' if schema == GOLDEN else 'retention removes them'}")


user_cli = typer.Typer(help="Workbench users (stewards, viewers, admins) and their API tokens (reads HUB_REDIS__URL).")
cli.add_typer(user_cli, name="user")


def _accounts():
    from hub.store.redis.client import client_from_url
    from hub.workbench.auth import Accounts

    settings = load_settings()
    if not settings.redis.url:
        _fail("set HUB_REDIS__URL to the Redis the workers use")
    return Accounts(client_from_url(settings.redis.url))


@user_cli.command("add")
def user_add(name: str, role: str = typer.Option("steward", help="viewer, steward or admin"),
             password_stdin: bool = typer.Option(False, "--password-stdin",
                                                 help="Read the password from stdin")) -> None:
    """Add a user (the password is asked for, or read from stdin)."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt(
        "password", hide_input=True, confirmation_prompt=True)
    try:
        _accounts().add_user(name, role, password)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"user {name.strip().lower()} added as {role}")


@user_cli.command("list")
def user_list() -> None:
    """Every user, its role and whether it is disabled."""
    for user in _accounts().users():
        typer.echo(f"{user['name']:<32} {user['role']:<8} {'disabled' if user['disabled'] else 'active'}")


@user_cli.command("set")
def user_set(name: str, role: Optional[str] = typer.Option(None, help="viewer, steward or admin"),
             disabled: Optional[bool] = typer.Option(None, "--disabled/--enabled"),
             password_stdin: bool = typer.Option(False, "--password-stdin", help="A new password, from stdin")) -> None:
    """Change a user's role, disable or enable it, or set a new password."""
    accounts = _accounts()
    try:
        if role is not None:
            accounts.set_role(name, role)
        if disabled is not None:
            accounts.set_disabled(name, disabled)
        if password_stdin:
            accounts.set_password(name, sys.stdin.readline().rstrip("\n"))
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"user {name} updated")


@user_cli.command("token")
def user_token(name: str) -> None:
    """A new API token for a user (for `hub steward`: HUB_STEWARD_TOKEN); shown once."""
    try:
        token = _accounts().new_token(name)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(token)


@cli.command()
def workbench(host: Optional[str] = typer.Option(None, help="Address to listen on (default HUB_WORKBENCH__HOST)"),
              port: Optional[int] = typer.Option(None, help="HTTP port (default HUB_WORKBENCH__PORT, 6080)"),
              config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML")) -> None:
    """Serve the steward workbench and the customers' self-service pages, beside the workers (their Kafka and Redis)."""
    try:
        settings = load_settings()
        pipeline = load_pipeline(config or settings.config_file)
    except ConfigError as exc:
        _fail(str(exc))
    if host is not None:
        settings.workbench.host = host
    if port is not None:
        settings.workbench.port = port
    if not settings.redis.url:
        _fail("set HUB_REDIS__URL to the Redis the workers use")
    _secret(settings)
    setup_logging(settings.log_level, settings.log_json)
    from hub.workbench.app import serve

    typer.echo(f"hub: workbench on http://{settings.workbench.host}:{settings.workbench.port}/", err=True)
    serve(settings, pipeline, _kafka(settings), settings.redis.url)


@cli.command()
def self_service_link(source: str = typer.Argument(..., help="The source system of the customer's record"),
                      source_id: str = typer.Argument(..., help="The record's id in that source"),
                      ttl_s: Optional[int] = typer.Option(None, help="Seconds the link opens (default "
                                                          "HUB_WORKBENCH__LINK_TTL_S, 7 days)")) -> None:
    """A signed, expiring link for one customer to see, confirm and correct their data and consent."""
    import time as _time

    from hub import self_service

    settings = load_settings()
    options = settings.workbench
    try:
        keys = self_service.keys_for(options.link_keys, _secret(settings).decode())
    except ValueError as exc:
        _fail(f"HUB_WORKBENCH__LINK_KEYS: {exc}")
    expires = int(_time.time() * 1000) + 1000 * (ttl_s or options.link_ttl_s)
    base = (options.public_url or f"http://{options.host}:{options.port}").rstrip("/")
    typer.echo(f"{base}/s/{self_service.sign(keys, f'{source}:{source_id}', expires)}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()


if __name__ == "__main__":
    main()
