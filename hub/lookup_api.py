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

from hub import access, lookup, metrics
from hub.consent import ALLOWED, target_verdict
from hub.matching.features import hash_key
from hub.projection import encode_json, fingerprint, project

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


def register(hub) -> None:
    """Add the lookup and OpenAPI routes to the worker's web server."""
    app = hub.app
    targets = {t.name: t for t in hub.pipeline.targets}
    purposes = {p.name: p for p in hub.pipeline.purposes}
    secret = hub.settings.pii_key.encode()
    default_region = hub.pipeline.sources[0].default_region

    @app.page("/targets/{target}/lookup")
    async def lookup_customer(self, request, target: str):
        """One customer by golden id, loyalty id, e-mail, phone or source record, as `target` may see them."""
        started = time.perf_counter()
        kind, status, payload, headers = "invalid", 400, None, {}
        try:
            auth = access.authorize(hub.pipeline, access.bearer(request.headers.get("Authorization")), target)
            if auth != access.OK:
                status = auth
                body = {"error": "unauthorized" if auth == access.UNAUTHENTICATED else "forbidden"}
                if auth == access.UNAUTHENTICATED:
                    headers["WWW-Authenticate"] = "Bearer"
                return self.json(body, status=status, headers=headers)
            kind, value = parse_query(request.query, default_region)
            if kind is None:
                kind = "invalid"
                return self.json({"error": "bad_request", "detail": value}, status=400)
            if value is None:
                return self.json({"error": "invalid_value", "lookup": kind,
                                  "detail": f"not a valid {kind.replace('_', ' ')} once standardised"}, status=400)
            if kind == "golden_id":
                found = hub.store.lookup(golden_id=value)
            else:
                found = hub.store.lookup(index_key=hash_key(secret, value), limit=MAX_MATCHES)
            now_ms = int(time.time() * 1000)
            config = targets[target]
            visible = [g for g in found if target_verdict(g, config, purposes, now_ms) == ALLOWED]
            if not visible:
                # withheld and unknown look the same: the answer must not reveal who exists
                status = 404
                return self.json({"error": "not_found", "lookup": kind, "detail": _NOT_FOUND[kind]}, status=404)
            if len(visible) > 1:
                status = 409
                return self.json({"error": "ambiguous", "lookup": kind, "golden_ids": [g["golden_id"] for g in visible],
                                  "detail": "several customers share this identifier: look one up by golden_id"},
                                 status=409)
            payload = encode_json(project(visible[0], config))
            etag = f'"{fingerprint(payload)}"'
            if request.headers.get("If-None-Match") == etag:
                status = 304
                return self.bytes(b"", status=304, headers={"ETag": etag})
            status = 200
            return self.bytes(payload, content_type="application/json", headers={"ETag": etag})
        finally:
            metrics.LOOKUPS.labels(kind, str(status)).inc()
            metrics.LOOKUP_SECONDS.labels(kind).observe(time.perf_counter() - started)

    @app.page("/openapi.json")
    async def openapi(self, request):
        """The OpenAPI 3 description of the worker's HTTP routes."""
        return self.json(OPENAPI)


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
            "parameters": [_TARGET],
            "responses": {"200": {"description": "target, format, schema_id, schema"}, "404": _error("Unknown target")}}},
        "/explain/{source}/{source_id}": {"get": {
            "summary": "Why a source record belongs to its golden record (steward tokens only)",
            "security": [{"targetToken": []}],
            "parameters": [{"name": "source", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "source_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "source, source_id, golden_id, decision"},
                          "401": _error("Not a steward token"), "404": _error("Record not in the identity index")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text format)",
                             "responses": {"200": {"description": "text/plain exposition format"}}}},
        "/health": {"get": {"summary": "Liveness and Redis reachability",
                            "responses": {"200": {"description": "status ok"}, "503": {"description": "Redis down"}}}},
        "/openapi.json": {"get": {"summary": "This description", "responses": {"200": {"description": "OpenAPI 3"}}}},
    },
}
