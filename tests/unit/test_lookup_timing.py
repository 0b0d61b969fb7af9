"""The lookup API must not be a timing oracle: a target asking for an
identifier held by a customer it may not see (withheld by consent) and for
one nobody holds gets the same 404 after the same work: the same Redis round
trips, one sealed golden record opened and parsed, one consent verdict."""

from __future__ import annotations

import asyncio

import pytest
import redis.connection

from hub import consent, lookup_api
from hub.config import load_pipeline
from hub.connectors.embedded import EmbeddedRedis
from hub.demo import with_demo_tokens
from hub.lookup import index_keys
from hub.lookup_api import LookupService
from hub.ports import GoldenState
from hub.store.redis import RedisStore

SECRET = b"k" * 32
WITHHELD = {"golden_id": "G0123456789abcdef0123", "version": 1, "record_type": "person", "given_name": "Wanda",
            "family_name": "Held", "members": ["crm:W1"], "loyalty_id": "L000000777",
            "emails": [{"address": "wanda.held@example.com", "verified": False, "stale": False}],
            "phones": [{"number": "+447911123456", "verified": False, "stale": False}], "addresses": [],
            "preferences": {}, "lineage": {}, "last_event_time": 1,
            # service denied: no target may see her
            "consents": [{"subject": "crm:W1", "statement": {
                "purpose": "service", "channel": "any", "status": "denied", "legal_basis": "contract",
                "effective_at": None, "expires_at": None, "collection_point": None, "notice_version": None,
                "evidence": None, "event_time": 1}}]}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    store = RedisStore.from_url(server.url)
    asyncio.run(store.save([GoldenState(WITHHELD["golden_id"], {}, WITHHELD)], []))
    store.add_lookup_keys({WITHHELD["golden_id"]: index_keys(WITHHELD, SECRET)})
    pipeline, tokens = with_demo_tokens(load_pipeline(None), tmp_path_factory.mktemp("cfg") / "hub.yaml")
    yield LookupService(pipeline, store, SECRET), tokens.targets["pos"]
    server.stop()


def work(service, token, query, monkeypatch) -> dict:
    counts = {"round_trips": 0, "opened": 0, "verdicts": 0}
    send = redis.connection.AbstractConnection.send_packed_command
    opened = service.store.keyring.open
    verdict = consent.target_verdict

    def counting_send(self, *args, **kwargs):
        counts["round_trips"] += 1
        return send(self, *args, **kwargs)

    def counting_open(*args, **kwargs):
        counts["opened"] += 1
        return opened(*args, **kwargs)

    def counting_verdict(*args, **kwargs):
        counts["verdicts"] += 1
        return verdict(*args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_send)
    monkeypatch.setattr(service.store.keyring, "open", counting_open)
    monkeypatch.setattr(lookup_api, "target_verdict", counting_verdict)
    answer = service.answer("pos", query, f"Bearer {token}", None)
    monkeypatch.undo()
    counts["status"] = answer.status
    counts["body"] = answer.body.replace(b"golden id", b"").replace(b"loyalty id", b"")
    return counts


@pytest.mark.parametrize("kind,held,unknown", [
    ("email", "wanda.held@example.com", "nobody.here@example.com"),
    ("phone", "+447911123456", "+447911123457"),
    ("loyalty_id", "L000000777", "L000000778"),
    ("golden_id", WITHHELD["golden_id"], "G00000000000000000000"),
])
def test_withheld_and_unknown_identifiers_cost_the_same_work(service, kind, held, unknown, monkeypatch):
    lookup, token = service
    withheld = work(lookup, token, {kind: held}, monkeypatch)
    nobody = work(lookup, token, {kind: unknown}, monkeypatch)
    assert withheld["status"] == nobody["status"] == 404
    assert withheld == nobody
    assert withheld["opened"] == 1 and withheld["verdicts"] == 1


def test_withheld_and_unknown_source_records_cost_the_same_work(service, monkeypatch):
    lookup, token = service
    withheld = work(lookup, token, {"source": "crm", "source_id": "W1"}, monkeypatch)
    nobody = work(lookup, token, {"source": "crm", "source_id": "W2"}, monkeypatch)
    assert withheld == nobody and withheld["status"] == 404


def test_the_decoy_is_never_answered(service):
    lookup, token = service
    answer = lookup.answer("pos", {"golden_id": "~decoy"}, f"Bearer {token}", None)
    assert answer.status == 404
