"""Unit tests for hub.lookup (secondary lookup keys) and the lookup API's
query parsing and OpenAPI description."""

from __future__ import annotations

import pytest

from hub import lookup
from hub.config import load_pipeline, load_settings
from hub.lookup_api import OPENAPI, parse_query
from hub.matching.features import hash_key

SECRET = b"test-secret"
GOLDEN = {"golden_id": "G1", "members": ["crm:C1", "pos:P3"], "loyalty_id": "L000000042",
          "emails": [{"address": "anna.smith@gmail.com"}], "phones": [{"number": "+447911123456"}]}


def test_identifiers_cover_loyalty_emails_phones_and_members():
    assert lookup.identifiers(GOLDEN) == {"s:crm:C1", "s:pos:P3", "l:L000000042", "e:anna.smith@gmail.com",
                                          "p:+447911123456"}
    assert lookup.identifiers(None) == set()


def test_index_keys_are_keyed_hashes_never_plain_values():
    keys = lookup.index_keys(GOLDEN, SECRET)
    assert len(keys) == 5
    assert not any("@" in k or "447911" in k or "crm" in k for k in keys)
    assert keys != lookup.index_keys(GOLDEN, b"another key")


def test_changes_remove_what_went_and_add_what_came():
    after = {**GOLDEN, "emails": [{"address": "anna@new.example"}], "members": ["crm:C1", "pos:P3", "web:W1"]}
    removed, added = lookup.changes(GOLDEN, after, SECRET)
    assert removed == {hash_key(SECRET, "e:anna.smith@gmail.com")}
    assert added == {hash_key(SECRET, "e:anna@new.example"), hash_key(SECRET, "s:web:W1")}
    assert lookup.changes(GOLDEN, GOLDEN, SECRET) == (set(), set())
    removed, added = lookup.changes(GOLDEN, None, SECRET)  # erased or merged away: findable by nothing
    assert removed == lookup.index_keys(GOLDEN, SECRET) and added == set()


@pytest.mark.parametrize("kind,value,expected", [
    ("email", "  Anna.Smith@GMAIL.com ", "e:anna.smith@gmail.com"),
    ("phone", "+44 7911 123456", "p:+447911123456"),
    ("phone", "07911123456", "p:+447911123456"),
    ("phone", "(07911) 123-456", "p:+447911123456"),
    ("loyalty_id", "l-0000 00042", "l:L000000042"),
    ("source", "crm:C1", "s:crm:C1"),
    ("email", "not an email", None),
    ("phone", "12", None),
    ("source", "crm:", None),
])
def test_query_values_are_standardised_as_at_ingest(kind, value, expected):
    assert lookup.query_value(kind, value) == expected


def test_query_matches_what_ingest_stored():
    from hub.standardise import standardise

    record, _ = standardise({"source": "pos", "source_id": "P3", "event_time": 1, "loyalty_id": "L-0000-00042",
                             "emails": [{"address": "Anna.Smith@Gmail.com"}], "phones": [{"number": "07911 123456"}]})
    stored = lookup.identifiers({"members": [], **record})
    assert lookup.query_value("email", "anna.smith@gmail.com") in stored
    assert lookup.query_value("phone", "+44 (0)7911 123456".replace("(0)", "")) in stored
    assert lookup.query_value("loyalty_id", "L000000042") in stored


@pytest.mark.parametrize("query,expected", [
    ({"golden_id": "G1"}, ("golden_id", "G1")),
    ({"email": "A@B.CO.UK"}, ("email", "e:a@b.co.uk")),
    ({"phone": "7911 123456", "region": "GB"}, ("phone", "p:+447911123456")),
    ({"phone": "030 1234567", "region": "DE"}, ("phone", "p:+49301234567")),
    ({"source": "crm", "source_id": "C1"}, ("source", "s:crm:C1")),
    ({"email": "nonsense"}, ("email", None)),
])
def test_parse_query(query, expected):
    assert parse_query(query, "GB") == expected


@pytest.mark.parametrize("query", [{}, {"email": "a@b.com", "phone": "07911123456"}, {"source": "crm"},
                                   {"source_id": "C1"}, {"golden_id": "G1", "source": "crm", "source_id": "C1"}])
def test_parse_query_rejects_none_or_several_kinds(query):
    kind, why = parse_query(query, "GB")
    assert kind is None and why


def test_openapi_describes_every_route_the_worker_serves(tmp_path):
    from hub.app import create_hub

    settings = load_settings(state_dir=tmp_path)
    hub = create_hub(settings, load_pipeline(None), "127.0.0.1:1", "redis://127.0.0.1:1/0")
    served = set(hub.app.web.views)  # nothing connects: the routes exist once the app is built
    del hub.sink.producer  # nor ever will: no broker there
    assert "/targets/{target}/lookup" in served and "/openapi.json" in served
    assert served == set(OPENAPI["paths"]), served ^ set(OPENAPI["paths"])
    for path, item in OPENAPI["paths"].items():
        for operation in item.values():
            params = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert params == set(part[1:-1] for part in path.split("/") if part.startswith("{")), path


def test_openapi_describes_every_route_of_the_lookup_server():
    from hub.lookup_api import server_app

    app = server_app(load_pipeline(None), store=None, secret=SECRET)
    served = {resource.canonical for resource in app.router.resources()}
    assert served == {"/targets/{target}/lookup", "/openapi.json", "/health", "/metrics"}
    assert served <= set(OPENAPI["paths"])


def test_reindex_makes_golden_records_saved_before_the_index_findable(tmp_path, monkeypatch):
    import asyncio

    from typer.testing import CliRunner

    from hub.cli import cli
    from hub.connectors.embedded import EmbeddedRedis
    from hub.store.redis import RedisStore
    from hub.ports import GoldenState

    redis = EmbeddedRedis(tmp_path).start()
    try:
        store = RedisStore.from_url(redis.url)
        asyncio.run(store.save([GoldenState("G1", {}, {**GOLDEN, "version": 1, "last_event_time": 1})], []))  # no lookup keys
        secret = load_settings().pii_key.encode()
        key = hash_key(secret, "e:anna.smith@gmail.com")
        assert store.lookup(index_key=key) == []
        monkeypatch.setenv("HUB_REDIS__URL", redis.url)
        result = CliRunner().invoke(cli, ["reindex-lookups"])
        assert result.exit_code == 0 and "indexed 1 golden records" in result.output
        assert [g["golden_id"] for g in store.lookup(index_key=key)] == ["G1"]
        assert [g["golden_id"] for g in store.lookup(index_key=hash_key(secret, "s:pos:P3"))] == ["G1"]
    finally:
        redis.stop()
