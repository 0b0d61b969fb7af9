"""Every Prometheus metric the hub exports, in one place.

Names are `hub_*`, in base units (seconds, bytes), counters end in `_total`,
and label values come from closed sets (source, target, stage, reason,
decision): never ids, names or e-mails.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

BUILD_INFO = Info("hub_build", "Version of the running hub", registry=REGISTRY)
EVENTS_IN = Counter("hub_events_in_total", "Raw events read from a source topic", ["source"], registry=REGISTRY)
EVENTS_VALID = Counter("hub_events_valid_total", "Raw events that passed decoding and validation", ["source"],
                       registry=REGISTRY)
DLQ = Counter("hub_dlq_total", "Records sent to a dead-letter topic", ["source", "stage", "reason"], registry=REGISTRY)
STAGE_SECONDS = Histogram("hub_stage_seconds", "Time a stage spends on one batch, per record",
                          ["stage"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
DELIVERY_SECONDS = Histogram("hub_delivery_seconds", "A batch's outputs handed to the producer until the broker "
                             "acknowledged every one and the work waiting on that was done (leases given back), "
                             "per batch", ["stage"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
STAGE_RECORDS = Counter("hub_stage_records_total", "Records processed by a stage", ["stage"], registry=REGISTRY)
BATCH_SIZE = Histogram("hub_batch_records", "Records per batch", ["stage"],
                       buckets=(1, 10, 50, 100, 250, 500, 1000, 2500), registry=REGISTRY)
QUALITY = Histogram("hub_quality_score", "Data-quality score of standardised events (0..1)",
                    ["source", "dimension"], buckets=_SCORE_BUCKETS, registry=REGISTRY)
MATCH_DECISIONS = Counter("hub_match_decisions_total", "Identity-resolution outcomes", ["decision"], registry=REGISTRY)
CANDIDATES = Histogram("hub_match_candidates", "Candidate records scored per match", buckets=(0, 1, 2, 5, 10, 20, 50, 100),
                       registry=REGISTRY)
BLOCKS_SKIPPED = Counter("hub_blocking_keys_skipped_total", "Blocking keys not used because too many records share them",
                         registry=REGISTRY)
MERGES = Counter("hub_golden_merges_total", "Golden records merged into another", registry=REGISTRY)
GOLDEN_CHANGES = Counter("hub_golden_changes_total", "Golden-record changes by kind", ["kind"], registry=REGISTRY)
GOLDEN_RECORDS = Gauge("hub_golden_records", "Golden records currently held", registry=REGISTRY)
EVENTS_OUT = Counter("hub_events_out_total", "Records emitted to a target topic", ["target"], registry=REGISTRY)
UNCHANGED = Counter("hub_syndication_unchanged_total", "Golden changes a target did not need (its projection is unchanged)",
                    ["target"], registry=REGISTRY)
SUPERSEDED = Counter("hub_syndication_superseded_total",
                     "Golden records read back from their topic that the master had changed since (the current one "
                     "was sent instead) or deleted since (left to its tombstone)", ["outcome"], registry=REGISTRY)
SUPPRESSED = Counter("hub_consent_suppressed_total",
                     "Golden records withheld from a target (purpose: the one that failed, empty if none did)",
                     ["target", "reason", "purpose"],
                     registry=REGISTRY)
TOMBSTONES = Counter("hub_tombstones_total", "Tombstones sent to a target (purpose: when consent ended it)",
                     ["target", "reason", "purpose"], registry=REGISTRY)
# finer where latency targets sit (100 ms p99 at half load), so histogram_quantile does not jump from 0.1 to 0.25
END_TO_END = Histogram("hub_end_to_end_seconds", "Raw event produced to target record produced", ["target"],
                       buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                                30.0), registry=REGISTRY)
CONSENT_EVENTS = Counter("hub_consent_events_total", "Consent statements received", ["outcome"], registry=REGISTRY)
REDIS_SECONDS = Histogram("hub_redis_seconds", "Redis round trips", ["operation"], buckets=_LATENCY_BUCKETS,
                          registry=REGISTRY)
REDIS_ERRORS = Counter("hub_redis_errors_total", "Failed Redis round trips", ["operation"], registry=REGISTRY)
STAGE_RETRIES = Counter("hub_stage_retries_total", "Batches retried after a Redis or broker failure", ["stage"],
                        registry=REGISTRY)
STAGE_RETRYING = Gauge("hub_stage_retrying_seconds", "How long a stage has been retrying an outage (0: it is not); "
                       "past HUB_STALL_AFTER_S the worker's /health fails", ["stage"], registry=REGISTRY)
CONSUMER_LAG = Gauge("hub_consumer_lag_records", "Records not yet processed on this worker's partitions "
                     "(high watermark minus committed offset), per input topic", ["topic"], registry=REGISTRY)
ERASURES = Counter("hub_erasures_total", "Erasure requests by outcome (erased, not_held)", ["outcome"],
                   registry=REGISTRY)
RETENTION = Counter("hub_retention_total", "Golden records past the retention period, by action taken (flag, erase)",
                    ["action"], registry=REGISTRY)
MATCH_CONFLICTS = Counter("hub_match_conflicts_total",
                          "Batches partly re-decided because another worker linked a candidate meanwhile",
                          registry=REGISTRY)
GOLDEN_LEASE_WAITS = Counter("hub_golden_lease_waits_total",
                             "Times a master pass waited for a golden record another worker held "
                             "(the fused engine)", registry=REGISTRY)
GOLDEN_LEASE_WAIT_ENDS = Counter("hub_golden_lease_wait_ends_total",
                                 "How a master pass's wait for a golden record another worker held ended: "
                                 "released (the holder gave it back and said so) or timed_out (it tried again "
                                 "after its back-off)", ["outcome"], registry=REGISTRY)
GOLDEN_CLAIM_WAITS = Counter("hub_golden_claim_waits_total",
                             "Times a master pass waited for another pass of the same worker to give back a "
                             "golden record it wanted (hub.stages.master.GoldenClaims)", registry=REGISTRY)
STEWARD_ACTIONS = Counter("hub_steward_actions_total", "Steward decisions: applied now, or recorded for records to come",
                          ["action", "outcome"], registry=REGISTRY)
MATCH_PARAMETERS_VERSION = Gauge("hub_match_parameters_version",
                                 "Version of the estimated m/u in use (0: the built-in defaults)", registry=REGISTRY)
CONNECTOR_RECORDS = Counter("hub_connector_records_total",
                            "Records through a connector by outcome (delivered, dead_lettered, rejected, skipped)",
                            ["connector", "outcome"], registry=REGISTRY)
CDC_SKIPPED = Counter("hub_cdc_skipped_total", "Change-data-capture records that change no customer, by kind "
                      "(tombstone, truncate, message)", ["source", "kind"], registry=REGISTRY)
CONNECTOR_RETRIES = Counter("hub_connector_retries_total", "Deliveries a connector retried after a failure",
                            ["connector"], registry=REGISTRY)
_LOOKUP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LOOKUPS = Counter("hub_lookup_requests_total", "Lookup API requests by kind (golden_id, loyalty_id, email, phone, "
                  "source, invalid) and HTTP status", ["kind", "status"], registry=REGISTRY)
LOOKUP_SECONDS = Histogram("hub_lookup_duration_seconds", "Lookup API request handling time, in the worker",
                           ["kind"], buckets=_LOOKUP_BUCKETS, registry=REGISTRY)
SURVEY_EVENTS = Counter("hub_survey_events_total", "Survey / NPS answers received, applied, pending (record not "
                        "seen yet), rejected", ["outcome"], registry=REGISTRY)
HTTP_REJECTED = Counter("hub_http_rejected_total", "HTTP requests refused: by a limit (too_large, rate_limited, "
                        "body_timeout), by the HTTP parser (bad_method, line_too_long, bad_body, malformed), or failed "
                        "in the hub (internal_error)", ["reason"], registry=REGISTRY)
BROKER_ERRORS = Counter("hub_broker_errors_total", "Broker connection errors seen by the output producer (librdkafka error name)",
                        ["reason"], registry=REGISTRY)
API_READS = Counter("hub_api_reads_total", "Lookup API requests by target, token (its SHA-256 digest's first 12 hex "
                    "characters; unknown, none) and HTTP status", ["target", "token", "status"], registry=REGISTRY)
AUDIT_UNDELIVERED = Counter("hub_audit_undelivered_total", "Lookup access events (audit.access) the broker did not "
                            "acknowledge", registry=REGISTRY)
REVIEW_QUEUED = Counter("hub_review_items_queued_total", "Review-band decisions the workbench put in its queue "
                        "(a decision read twice counts once)", registry=REGISTRY)
WORKBENCH_ACTIONS = Counter("hub_workbench_audited_total", "Workbench reads and actions audited, by action "
                            "(golden_viewed, review_link, subject_access_exported, login_failed, ...)", ["action"],
                            registry=REGISTRY)


async def exposition(request):
    """aiohttp handler of GET /metrics: this registry in Prometheus's text format."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return web.Response(body=generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])


def observe_all(histogram, values: list[float]) -> None:
    """`histogram.observe(v)` for each of `values` (a labelled child), each bucket and the sum incremented
    once: a batch's observations for about the cost of one (metrics are counted per batch on the hot path).
    Reads prometheus_client's own fields (bounds, bucket values, sum), checked against `observe` by
    tests/unit/test_observability.py."""
    if not values:
        return
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for value in values:
        if value == value:  # NaN is in no bucket, as observe has it
            counts[bisect_left(bounds, value)] += 1
    for bucket, count in zip(histogram._buckets, counts):
        if count:
            bucket.inc(count)
    histogram._sum.inc(sum(values))
