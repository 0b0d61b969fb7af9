"""The workbench process (`hub workbench`): an aiohttp application over the
Redis and topics the workers use, and the feed that keeps the review queue.

`Workbench` holds what the pages need: the hub's store (reads), the review
queue, the quality tallies, the accounts, the self-service link keys, and
one idempotent librdkafka producer through which everything the workbench
says goes out and is acknowledged before a page answers: steward actions
(`steward.actions`), erasure requests, self-service events and consent
statements, and the access audit (`audit.access`): no customer is shown
and no action taken unless its audit event is on the broker.

`ReviewFeed` is a consumer group of its own (`hub-workbench`) on
`steward.review`: each batch of decisions is written to the queue (by
decision id: a decision read twice changes nothing), and only then are its
offsets committed.

The middlewares set security headers (a strict Content-Security-Policy: the
pages load only the workbench's own scripts, htmx and Chart.js vendored in
the package), load the steward's session, and refuse any POST whose CSRF
token does not match the session's. hub.limits.harden bounds request sizes,
rates per caller and slow connections, and keeps rejected requests out of
the log.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from pathlib import Path

import orjson
from aiohttp import web
from confluent_kafka import Consumer, KafkaException, Producer

from hub import limits, metrics
from hub.config import PipelineConfig, Settings
from hub.connectors.kafka_security import KafkaConnection, as_connection
from hub.quality_tally import RedisTallyStore
from hub.review import RedisReviewStore
from hub.schemas import ACCESS_EVENT, MATCH_DECISION, STEWARD_ACTION, codec
from hub.self_service import keys_for
from hub.store.redis import RedisStore
from hub.workbench import auth

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "hub_session"
LOGIN_COOKIE = "hub_login_csrf"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


class AuditUnavailable(RuntimeError):
    """The broker did not acknowledge an audit event or an action: nothing is shown or done."""


def now_ms() -> int:
    return int(time.time() * 1000)


class Workbench:
    def __init__(self, settings: Settings, pipeline: PipelineConfig, bootstrap: str | KafkaConnection,
                 store: RedisStore):
        self.settings = settings
        self.pipeline = pipeline
        self.bootstrap = bootstrap
        self.store = store
        self.reviews = RedisReviewStore(store.client)
        self.tallies = RedisTallyStore(store.client)
        options = settings.workbench
        self.accounts = auth.Accounts(store.client, options.session_ttl_s, options.session_idle_s,
                                      options.login_attempts, options.login_window_s)
        self.secret = settings.pii_secret()
        self.link_keys = keys_for(options.link_keys, self.secret.decode())
        self.public_url = (options.public_url or f"http://{options.host}:{options.port}").rstrip("/")
        self.producer = Producer(as_connection(bootstrap).config(**{"enable.idempotence": True, "linger.ms": 2}))
        self.access_codec = codec(ACCESS_EVENT)
        self.action_codec = codec(STEWARD_ACTION)

    # everything the workbench says goes out here, and is acknowledged before the page answers
    def _deliver(self, messages: list[tuple[str, bytes, bytes]]) -> None:
        failed = []

        def on_delivery(err, _msg):
            if err is not None:
                failed.append(err)

        for topic, key, value in messages:
            self.producer.produce(topic, value, key, on_delivery=on_delivery)
        if self.producer.flush(15) or failed:
            raise AuditUnavailable(f"the broker did not acknowledge {len(failed) or 'some'} record(s)")

    async def deliver(self, messages: list[tuple[str, bytes, bytes]]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._deliver, messages)

    def access_event(self, actor: str, role: str, action: str, golden_id: str | None = None,
                     subject: str | None = None, detail: str | None = None) -> tuple[str, bytes, bytes]:
        event = {"audit_id": "W" + secrets.token_hex(10), "at": now_ms(), "actor": actor, "role": role,
                 "action": action, "golden_id": golden_id, "subject": subject, "detail": detail}
        key = (golden_id or actor).encode()
        return self.pipeline.topics.access_audit, key, self.access_codec.encode(event)

    async def audit(self, actor: str, role: str, action: str, golden_id: str | None = None,
                    subject: str | None = None, detail: str | None = None,
                    also: list[tuple[str, bytes, bytes]] | None = None) -> None:
        """The audit event, with whatever the action sends, in one acknowledged delivery."""
        await self.deliver([*(also or ()), self.access_event(actor, role, action, golden_id, subject, detail)])
        metrics.WORKBENCH_ACTIONS.labels(action).inc()

    def steward_action(self, kind: str, member: str, others: list[str], actor: str,
                       reason: str | None = None) -> tuple[str, bytes, bytes]:
        value = self.action_codec.encode({"action": kind, "member": member, "others": list(others), "actor": actor,
                                          "reason": reason, "at": now_ms()})
        return self.pipeline.topics.steward, member.encode(), value

    def close(self) -> None:
        self.producer.flush(10)


class ReviewFeed(threading.Thread):
    """steward.review -> the review queue; offsets committed after the queue holds the batch."""

    def __init__(self, workbench: Workbench):
        super().__init__(name="review-feed", daemon=True)
        self.workbench = workbench
        self.stopping = threading.Event()
        self.decoder = codec(MATCH_DECISION)

    def run(self) -> None:
        settings = self.workbench.settings
        consumer = Consumer(as_connection(self.workbench.bootstrap).config(**{
            "group.id": settings.workbench.consumer_group, "enable.auto.commit": False, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
            "session.timeout.ms": int(settings.kafka.session_timeout_s * 1000),
            "heartbeat.interval.ms": max(100, int(settings.kafka.session_timeout_s * 1000 / 3))}))
        consumer.subscribe([self.workbench.pipeline.topics.review])
        try:
            while not self.stopping.is_set():
                messages = [m for m in consumer.consume(500, timeout=0.5) if not m.error()]
                if not messages:
                    continue
                decisions = []
                for message in messages:
                    try:
                        decisions.append(self.decoder.decode(message.value()))
                    except Exception:  # not a decision: nothing a steward could review
                        log.warning("steward.review %d/%d: not a hub.MatchDecision, skipped",
                                    message.partition(), message.offset())
                self._store(decisions)
                try:
                    consumer.commit(asynchronous=False)
                except KafkaException as exc:  # a rebalance: the next owner reads them again, idempotently
                    log.warning("review feed: commit failed: %s", exc)
        finally:
            consumer.close()

    def _store(self, decisions: list[dict]) -> None:
        delay = 0.2
        while not self.stopping.is_set():
            try:
                added = self.workbench.reviews.add(decisions, now_ms())
                metrics.REVIEW_QUEUED.inc(added)
                return
            except Exception as exc:  # Redis away: hold the offsets and try again
                log.warning("review feed: cannot write the queue (%s), retrying", type(exc).__name__)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)

    def stop(self) -> None:
        self.stopping.set()
        self.join(15)


@web.middleware
async def security_headers(request, handler):
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _secure(request, exc.headers)
        raise
    _secure(request, response.headers)
    return response


def _secure(request, headers) -> None:
    headers.setdefault("Content-Security-Policy", CSP)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"  # self-service links carry their token in the path
    if not request.path.startswith("/static/"):
        headers["Cache-Control"] = "no-store"


def session_middleware(workbench: Workbench):
    @web.middleware
    async def sessions(request, handler):
        request["session"] = workbench.accounts.session(request.cookies.get(SESSION_COOKIE), now_ms())
        return await handler(request)

    return sessions


# POSTs that carry their own proof instead of a session's CSRF token: the
# login form (a cookie it set itself), self-service forms (bound to the link),
# the API (bearer tokens, no cookies)
_OWN_PROOF = ("/login", "/s/", "/api/")


@web.middleware
async def csrf(request, handler):
    if request.method == "POST" and not request.path.startswith(_OWN_PROOF):
        session = request.get("session")
        presented = request.headers.get("X-CSRF-Token")
        if presented is None:
            presented = (await request.post()).get("csrf_token")
        if session is None or not auth.csrf_ok(session.csrf, presented):
            raise web.HTTPForbidden(text="This form has expired or did not come from the workbench: "
                                         "reload the page and try again.")
    return await handler(request)


def create_app(workbench: Workbench, start_feed: bool = True) -> web.Application:
    from hub.workbench import views

    app = web.Application(middlewares=[security_headers, session_middleware(workbench), csrf])
    app["workbench"] = workbench
    views.setup(app)
    app.router.add_static("/static/", HERE / "static", name="static", append_version=True)
    # sizes, rates, timeouts, quiet rejections; its own security headers (security_headers above)
    limits.harden(app, workbench.settings.web, security_headers=None)

    async def start(app):
        if start_feed:
            app["feed"] = ReviewFeed(workbench)
            app["feed"].start()

    async def stop(app):
        if "feed" in app:
            await asyncio.get_running_loop().run_in_executor(None, app["feed"].stop)
        workbench.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def serve(settings: Settings, pipeline: PipelineConfig, bootstrap: str | KafkaConnection, redis_url: str) -> None:
    from hub.connectors.kafka import ensure_topics

    ensure_topics(bootstrap, pipeline.all_topics(), pipeline.partitions)  # audit.access, before any worker made it
    workbench = Workbench(settings, pipeline, bootstrap, RedisStore.from_url(redis_url, settings.keyring()))
    app = create_app(workbench)
    options = settings.workbench
    web.run_app(app, host=options.host, port=options.port, access_log=None, print=None)


def json_response(data, **kwargs) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json", **kwargs)
