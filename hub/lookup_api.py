"""The lookup API for POS and contact-centre apps, and the OpenAPI description
of every route the worker serves.

`GET /targets/{target}/lookup?<kind>=<value>` finds one customer by golden id,
loyalty id, e-mail, phone or source record (`source=crm&source_id=C1`) and
answers with what that target may see of them (its projection, with an ETag),
under the same rules as `/targets/{target}/customers/{golden_id}`: a token
for that target, and a customer the target may not see answers exactly as an
unknown one. The query is standardised as at ingest; the index holds keyed
hashes of identifiers (hub/lookup.py), and one lookup is one Redis round trip.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson

from hub import access, lookup, metrics
from hub.audit_trail import AccessAudit
from hub.config import PipelineConfig
from hub.consent import ALLOWED, target_verdict
from hub.matching.features import hash_key
from hub.projection import encode_json, fingerprint, project, target_schema

# the most golden records one identifier may name (a shared family e-mail, a review-band pair)
MAX_MATCHES = 10

_NOT_FOUND = {
    "golden_id": "no customer with this golden id that this target may see",
    "loyalty_id": "no customer with this loyalty id that this target may see",
    "email": "no customer with this e-mail address that this target may see",
    "phone": "no customer with this phone number that this target may see",
    "source": "no customer holding this source record that this target may see",
}


def parse_query(query, default_region: str) -> tuple[str, str | None] | tuple[None, str]:
    """(kind, plain identifier or golden id) from the query string, or (None, why not)."""
    given = [k for k in ("golden_id", "loyalty_id", "email", "phone") if query.get(k)]
    by_source = bool(query.get("source") or query.get("source_id"))
    if len(given) + by_source != 1:
        return None, "give exactly one of golden_id, loyalty_id, email, phone, or source with source_id"
    if by_source:
        if not (query.get("source") and query.get("source_id")):
            return None, "a source record lookup needs both source and source_id"
        return "source", lookup.query_value("source", f"{query['source']}:{query['source_id']}")
    kind = given[0]
    value = query[kind].strip()
    if kind == "golden_id":
        return kind, value or None
    return kind, lookup.query_value(kind, value, query.get("region") or default_region)


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    golden_ids: list[str] = field(default_factory=list)  # whom the answer is about (for the access audit)


def _json(status: int, body: dict, **headers: str) -> Answer:
    return Answer(status, orjson.dumps(body), headers)


def _refusal(auth: int) -> Answer | None:
    """The answer to a caller without a token for this target (None: it has one). A target that does not
    exist answers as one whose token the caller lacks."""
    if auth == access.UNAUTHENTICATED:
        return _json(401, {"error": "unauthorized"}, **{"WWW-Authenticate": "Bearer"})
    if auth == access.FORBIDDEN:
        return _json(403, {"error": "forbidden"})
    return None


class LookupService:
    """The lookup itself, independent of the web server that carries it (the
    worker's Faust server, or `hub lookup-server` beside the workers)."""

    def __init__(self, pipeline: PipelineConfig, store, secret: bytes, audit=None):
        self.pipeline = pipeline
        self.store = store
        self.secret = secret
        self.audit = audit  # hub.audit_trail.AccessAudit, when a target audits its reads
        self.targets = {t.name: t for t in pipeline.targets}
        self.purposes = {p.name: p for p in pipeline.purposes}
        self.default_region = pipeline.sources[0].default_region

    def answer(self, target: str, query, authorization: str | None, if_none_match: str | None) -> Answer:
        started = time.perf_counter()
        kind, result = "none", None
        try:
            result = self._answer(target, query, authorization, if_none_match)
            kind = result.headers.pop("X-Lookup-Kind", kind)
            return result
        finally:
            status = result.status if result else 500
            metrics.LOOKUPS.labels(kind, str(status)).inc()
            metrics.LOOKUP_SECONDS.labels(kind).observe(time.perf_counter() - started)
            token = access.token_label(self.pipeline, access.bearer(authorization))
            metrics.API_READS.labels(target if target in self.targets else "unknown", token, str(status)).inc()
            if self.audit is not None:
                self.audit.record(target, token, kind, status, result.golden_ids if result else [])

    def _answer(self, target: str, query, authorization: str | None, if_none_match: str | None) -> Answer:
        refused = _refusal(access.authorize(self.pipeline, access.bearer(authorization), target))
        if refused is not None:
            return refused
        kind, value = parse_query(query, self.default_region)
        if kind is None:
            return _json(400, {"error": "bad_request", "detail": value})
        tag = {"X-Lookup-Kind": kind}
        if value is None:
            return _json(400, {"error": "invalid_value", "lookup": kind,
                               "detail": f"not a valid {kind.replace('_', ' ')} once standardised"}, **tag)
        if kind == "golden_id":
            found = self.store.lookup(golden_id=value)
        else:
            found = self.store.lookup(index_key=hash_key(self.secret, value), limit=MAX_MATCHES)
        now_ms = int(time.time() * 1000)
        config = self.targets[target]
        visible = [g for g in found if target_verdict(g, config, self.purposes, now_ms) == ALLOWED]
        if not found:  # judged like a withheld customer, and thrown away: the time must not tell (hub.lookup)
            target_verdict(lookup.decoy_golden(), config, self.purposes, now_ms)
        if not visible:
            # withheld and unknown look the same: the answer must not reveal who exists
            return _json(404, {"error": "not_found", "lookup": kind, "detail": _NOT_FOUND[kind]}, **tag)
        found_ids = [g["golden_id"] for g in visible]
        if len(visible) > 1:
            answer = _json(409, {"error": "ambiguous", "lookup": kind, "golden_ids": found_ids,
                                 "detail": "several customers share this identifier: look one up by golden_id"}, **tag)
            answer.golden_ids = found_ids
            return answer
        payload = encode_json(project(visible[0], config))
        etag = f'"{fingerprint(payload)}"'
        if if_none_match == etag:
            return Answer(304, b"", {"ETag": etag, **tag}, found_ids)
        return Answer(200, payload, {"ETag": etag, **tag}, found_ids)


def register(hub) -> None:
    """Add the target-scoped routes (lookup, one customer, a target's schema) and the OpenAPI
    description to the worker's web server."""
    audit = None
    if AccessAudit.wanted(hub.pipeline):  # its own producer: a stage's flush must not wait on reads' events
        audit = AccessAudit(hub.pipeline, hub.sink.kafka, hub.settings.app_id)
    service = LookupService(hub.pipeline, hub.store, hub.settings.pii_secret(), audit)
    targets = {t.name: t for t in hub.pipeline.targets}

    @hub.app.page("/targets/{target}/lookup")
    async def lookup_customer(self, request, target: str):
        """One customer by golden id, loyalty id, e-mail, phone or source record, as `target` may see them."""
        answer = service.answer(target, request.query, request.headers.get("Authorization"),
                                request.headers.get("If-None-Match"))
        return self.bytes(answer.body, status=answer.status, headers=answer.headers,
                          content_type="application/json")

    @hub.app.page("/targets/{target}/customers/{golden_id}")
    async def customer_for_target(self, request, target: str, golden_id: str):
        """What `target` may see of one customer: the lookup by golden id (same scoping, same answer for
        withheld and unknown, after the same work)."""
        answer = service.answer(target, {"golden_id": golden_id}, request.headers.get("Authorization"),
                                request.headers.get("If-None-Match"))
        return self.bytes(answer.body, status=answer.status, headers=answer.headers,
                          content_type="application/json")

    @hub.app.page("/targets/{target}/schema")
    async def schema_of_target(self, request, target: str):
        """The Avro schema of a target's records and its wire-format id, for that target's token only:
        target names are not for anyone to enumerate."""
        refused = _refusal(access.authorize(hub.pipeline, access.bearer(request.headers.get("Authorization")), target))
        if refused is not None:
            return self.bytes(refused.body, status=refused.status, headers=refused.headers,
                              content_type="application/json")
        schema, schema_id = target_schema(targets[target])
        return self.json({"target": target, "format": targets[target].format, "schema_id": schema_id,
                          "schema": schema})

    @hub.app.page("/openapi.json")
    async def openapi(self, request):
        """The OpenAPI 3 description of the worker's HTTP routes."""
        return self.json(OPENAPI)


# Routes of `hub lookup-server`: the read path on its own event loop, beside
# the workers, so a batch being mastered never delays a till.
SERVER_PATHS = ("/targets/{target}/lookup", "/openapi.json", "/health", "/metrics")


def server_app(pipeline: PipelineConfig, store, secret: bytes, web_settings=None, audit=None, **hardening):
    """An aiohttp application serving the lookup API alone (stateless: any number may run), with the
    limits of `web_settings` (HUB_WEB__*; `hardening`: hub.limits.harden's timeouts)."""
    from aiohttp import web

    from hub.config import WebSettings
    from hub.limits import harden

    service = LookupService(pipeline, store, secret, audit)
    spec = {**OPENAPI, "paths": {p: OPENAPI["paths"][p] for p in SERVER_PATHS}}

    async def lookup_customer(request):
        answer = service.answer(request.match_info["target"], request.query, request.headers.get("Authorization"),
                                request.headers.get("If-None-Match"))
        return web.Response(body=answer.body, status=answer.status, headers=answer.headers,
                            content_type="application/json" if answer.body else None)

    async def openapi(request):
        return web.json_response(spec)

    async def health(request):
        try:
            await store.ping()
        except Exception as exc:
            return web.json_response({"status": "degraded", "redis": type(exc).__name__}, status=503)
        return web.json_response({"status": "ok"})

    app = web.Application()
    if audit is not None:
        async def flush_audit(_app) -> None:
            audit.close()
        app.on_cleanup.append(flush_audit)
    app.router.add_get(SERVER_PATHS[0], lookup_customer)
    app.router.add_get(SERVER_PATHS[1], openapi)
    app.router.add_get(SERVER_PATHS[2], health)
    app.router.add_get(SERVER_PATHS[3], metrics.exposition)
    harden(app, web_settings or WebSettings(), **hardening)
    return app


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_TARGET = {"name": "target", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "A configured target (pos, contact_center, ...); the token must be one of its tokens"}
_PROJECTION = {"description": "What the target may see of the customer: golden_id and the target's configured fields",
               "headers": {"ETag": {"schema": {"type": "string"}}},
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Projection"}}}}
_SCOPED = {"401": _error("No token, or an unknown one"), "403": _error("A token of another target"),
           "404": _error("Unknown, or not visible to this target (the two are indistinguishable)"),
           "304": {"description": "If-None-Match matched the current ETag"}}


def _query(name: str, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": description}


OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "The hub: customer master data lookups", "version": "1",
             "description": "Routes served by every hub worker on HUB_WEB__PORT. Customer routes are scoped to one "
                            "target: Authorization: Bearer <token of that target> (hub new-token TARGET)."},
    "components": {
        "securitySchemes": {"targetToken": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string", "enum": ["unauthorized", "forbidden", "not_found", "bad_request",
                                                     "invalid_value", "ambiguous", "unknown_target"]},
                "lookup": {"type": "string", "enum": list(lookup.KINDS)},
                "detail": {"type": "string"},
                "golden_ids": {"type": "array", "items": {"type": "string"}}}},
            "Projection": {"type": "object", "required": ["golden_id"], "additionalProperties": True,
                           "properties": {"golden_id": {"type": "string"}},
                           "description": "The golden record cut to the target's fields (hub.GoldenRecord)"},
        },
    },
    "paths": {
        "/targets/{target}/lookup": {"get": {
            "summary": "Find one customer by golden id, loyalty id, e-mail, phone or source record",
            "description": "Exactly one of golden_id, loyalty_id, email, phone, or source with source_id. Values are "
                           "standardised as at ingest (case, spacing, phone numbers to E.164 in `region`). A golden "
                           "id merged into another finds the survivor.",
            "security": [{"targetToken": []}],
            "parameters": [_TARGET, _query("golden_id", "Golden id"), _query("loyalty_id", "Loyalty card id"),
                           _query("email", "E-mail address"), _query("phone", "Phone number, any common format"),
                           _query("region", "Numbering region for a phone without country code (default: the first "
                                            "source's default_region)"),
                           _query("source", "Source system"), _query("source_id", "The record's id in that source"),
                           {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}}],
            "responses": {"200": _PROJECTION, **_SCOPED,
                          "400": _error("No or several lookup kinds, or a value that cannot be one (a malformed "
                                        "e-mail or phone number)"),
                          "409": _error("Several customers this target may see share the identifier")}}},
        "/targets/{target}/customers/{golden_id}": {"get": {
            "summary": "One customer by golden id, as the target may see them",
            "security": [{"targetToken": []}],
            "parameters": [_TARGET, {"name": "golden_id", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}}],
            "responses": {"200": _PROJECTION, **_SCOPED}}},
        "/targets/{target}/schema": {"get": {
            "summary": "The Avro schema of a target's records and its wire-format id",
            "security": [{"targetToken": []}],
            "parameters": [_TARGET],
            "responses": {"200": {"description": "target, format, schema_id, schema"},
                          "401": _error("No token, or an unknown one"),
                          "403": _error("A token of another target (or of no target by that name)")}}},
        "/explain/{source}/{source_id}": {"get": {
            "summary": "Why a source record belongs to its golden record (steward tokens only)",
            "security": [{"targetToken": []}],
            "parameters": [{"name": "source", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "source_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "source, source_id, golden_id, decision"},
                          "401": _error("Not a steward token"), "404": _error("Record not in the identity index")}}},
        "/sources/{source}/events": {"post": {
            "summary": "Ingest one event or a batch from a source system (hub.CustomerEvent as JSON)",
            "description": "A JSON object (one event) or an array of them; validated as the ingest stage does. 202 "
                           "once every event is on the source's raw topic; 400 with the reasons per record when "
                           "any is refused (then none is written).",
            "security": [{"targetToken": []}],
            "parameters": [{"name": "source", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}}}},
            "responses": {"202": {"description": "accepted, topic"},
                          "400": {"description": "accepted 0, errors: the reason per refused record"},
                          "401": _error("Missing token, or not one of this source's (an unknown source "
                                        "answers the same)"),
                          "413": {"description": "Body over the source's max_request_bytes"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text format)",
                             "responses": {"200": {"description": "text/plain exposition format"}}}},
        "/health": {"get": {"summary": "Liveness and Redis reachability",
                            "responses": {"200": {"description": "status ok"}, "503": {"description": "Redis down"}}}},
        "/openapi.json": {"get": {"summary": "This description", "responses": {"200": {"description": "OpenAPI 3"}}}},
    },
}
