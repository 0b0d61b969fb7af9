"""`hub load`: every record of a file (JSONL, or CSV through a column
mapping) or of any source connector URL onto raw.<source>, with progress, and
optionally followed through the workers until mastered.

Built for initial loads of real volumes on the embedded broker too: records
are produced in large batches (few, big record batches per partition), since
the embedded broker's fetches slow down with the number of batches a
partition holds, not with its records (benchmarks/broker_fetch.py;
docs/bulk-load.md). Lines that cannot become an event go to dlq.<source>
with their reason and line number, and are counted by reason.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from hub.config import DEFAULT_ENGINE, ConnectorConfig, PipelineConfig
from hub.connectors.kafka import end_offsets
from hub.connectors.runner import Report, SourceConnector
from hub.follow import dead_letters_since, follow
from hub.progress import Progress

# records per poll: one broker round trip (flush) each, a few full record batches per partition
LOAD_BATCH = 20_000
# librdkafka: wait to fill a batch, up to message.max.bytes (1 MB) or this many records
BULK_PRODUCER = {"linger_ms": 100, "batch.num.messages": 100_000}


@dataclass
class LoadReport:
    delivered: int = 0
    rejected: Counter = field(default_factory=Counter)     # by reason, at the loader
    seconds: float = 0.0
    records_per_batch: float | None = None  # produced record batches, as librdkafka counted them
    followed_s: float | None = None
    ingest_rejected: Counter = field(default_factory=Counter)  # by reason, at the workers' ingest stage

    def lines(self, raw_topic: str, dlq_topic: str) -> list[str]:
        rate = self.delivered / self.seconds if self.seconds else 0.0
        out = [f"{self.delivered} events to {raw_topic}, {sum(self.rejected.values())} rejected to {dlq_topic}"
               + (f" ({_reasons(self.rejected)})" if self.rejected else "")
               + f" in {self.seconds:.1f} s ({rate:,.0f}/s"
               + (f", {self.records_per_batch:,.0f} records per batch)" if self.records_per_batch else ")")]
        if self.followed_s is not None:
            out.append(f"mastered: the workers took every record in within {self.followed_s:.1f} s of the load's end"
                       f"; rejected by their ingest stage: {sum(self.ingest_rejected.values())}"
                       + (f" ({_reasons(self.ingest_rejected)})" if self.ingest_rejected else ""))
        return out


class BatchCounter:
    """librdkafka's statistics callback: how many records went into each produced batch, on average."""

    def __init__(self):
        self.batches = 0
        self.records = 0.0

    def __call__(self, stats_json: str) -> None:
        import orjson

        for topic in orjson.loads(stats_json).get("topics", {}).values():
            window = topic.get("batchcnt", {})
            self.batches += window.get("cnt", 0)
            self.records += window.get("cnt", 0) * window.get("avg", 0)

    def average(self) -> float | None:
        return self.records / self.batches if self.batches else None


def _reasons(counts: Counter) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in counts.most_common())


def load(connector_config: ConnectorConfig, pipeline: PipelineConfig, bootstrap: str, *, group: str,
         follow_records: bool = False, follow_timeout_s: float | None = None, stream: TextIO | None = None,
         source=None, engine: str = DEFAULT_ENGINE) -> LoadReport:
    """Run the load; with `follow_records`, then wait until the workers' group
    (`group`, running `engine`) has mastered what it wrote (see hub.follow)."""
    stream = stream if stream is not None else sys.stderr
    source_config = pipeline.source(connector_config.source)
    batches = BatchCounter()
    connector = SourceConnector(connector_config, pipeline, bootstrap, source=source,
                                producer={**BULK_PRODUCER, "statistics.interval.ms": 500, "stats_cb": batches})
    raw, dlq = source_config.raw_topic, connector_config.dlq_topic
    start = end_offsets(bootstrap, [raw]) if follow_records else {}
    dlq_start = end_offsets(bootstrap, [dlq]) if follow_records else {}
    progress = Progress(f"loading {raw}", unit="records", stream=stream)
    position = getattr(connector.source, "position", None)

    def on_batch(report: Report) -> None:
        done = report.delivered + report.rejected
        total = None
        where = position() if position else None
        if where and where[0]:
            total = max(done, round(done * where[1] / where[0]))  # estimated from the share of bytes read
        progress.update(done, f"rejected {report.rejected}", total=total)

    started = time.monotonic()
    report = connector.run(on_batch=on_batch)
    result = LoadReport(report.delivered, Counter(report.rejected_reasons), time.monotonic() - started)
    connector.sink.producer.poll(0.6)  # the last statistics window
    result.records_per_batch = batches.average()
    progress.update(report.delivered + report.rejected, total=report.delivered + report.rejected)
    progress.finish()
    if follow_records:
        end = end_offsets(bootstrap, [raw])
        following = Progress(f"mastering {raw}", unit="records", stream=stream)
        followed = time.monotonic()
        follow(bootstrap, group, pipeline, start, end,
               lambda done, total, queued: following.update(done, f"queued in the workers' topics {queued:,}", total),
               timeout_s=follow_timeout_s, engine=engine)
        following.finish()
        result.followed_s = time.monotonic() - followed
        for stage, reasons in dead_letters_since(bootstrap, dlq, dlq_start).items():
            if not stage.startswith("connector:"):
                result.ingest_rejected.update(reasons)
    return result
