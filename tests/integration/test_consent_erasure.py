"""Consent, purpose-based syndication, erasure and scoped access, on the real
broker and Redis. What each target topic holds is checked record by record
against an independent reading of the consent rules written here."""

from __future__ import annotations

import time
import urllib.request

import orjson
import pytest
import redis
import yaml

from hub.access import new_token
from hub.config import PipelineConfig, load_pipeline
from hub.projection import decode_avro
from hub.schemas import CONSENT_EVENT, CUSTOMER_EVENT, ERASURE_REQUEST, codec
from hub.testing.harness import Feeder, LocalHub, Watcher, open_golden, open_goldens

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 60_000


def person(source, sid, given, family, email, phone, loyalty=None, at=T0):
    return {"source": source, "source_id": sid, "event_time": at, "given_name": given, "family_name": family,
            "birth_date": "1985-04-12", "emails": [{"address": email}], "phones": [{"number": phone}],
            "loyalty_id": loyalty,
            "addresses": [{"line1": f"{sid} Station Road", "city": "Leeds", "postcode": "LS2 9JT", "country": "GB"}]}


PEOPLE = {  # person -> source records
    "P1": [person("crm", "1", "Alice", "Archer", "alice.archer@gmail.com", "07911 100001", "L000000001"),
           person("ecommerce", "1", "Alice", "Archer", "alice.archer@gmail.com", "07911 100001")],
    "P2": [person("crm", "2", "Brian", "Booth", "brian.booth@gmail.com", "07911 100002", "L000000002")],
    "P3": [person("crm", "3", "Chloe", "Carter", "chloe.carter@gmail.com", "07911 100003")],
    "P4": [person("crm", "4", "David", "Dunn", "david.dunn@gmail.com", "07911 100004", "L000000004")],
    "P5": [person("crm", "5", "Erica", "Ellis", "erica.ellis@gmail.com", "07911 100005", "L000000005"),
           person("pos", "5", "Erica", "Ellis", "erica.ellis@gmail.com", "07911 100005", "L000000005")],
    "P6": [person("crm", "6", "Frank", "Foster", "frank.foster@gmail.com", "07911 100006")],
}


def statement(purpose, status, channel="email", basis="consent", at=T0 + 1000, expires=None):
    return {"purpose": purpose, "channel": channel, "status": status, "legal_basis": basis, "effective_at": None,
            "expires_at": expires, "collection_point": "web", "notice_version": "v3", "evidence": "form",
            "event_time": at}


def consent_plan(expiry_ms: int) -> list[tuple[str, dict]]:
    """(member, statement) in the order they are sent; times, not order, decide."""
    return [
        ("crm:1", statement("marketing", "granted")),
        ("crm:2", statement("marketing", "granted")),
        ("crm:2", statement("marketing", "revoked", at=T0 + 5000)),      # P2 withdraws
        ("crm:3", statement("marketing", "granted", expires=expiry_ms)),  # P3 lapses by itself
        ("crm:4", statement("service", "denied", channel="any")),        # P4 refuses service processing
        ("crm:5", statement("marketing", "granted", channel="sms")),     # wrong channel for marketing
        ("crm:6", statement("marketing", "granted", basis="legitimate_interest")),  # basis not accepted
        ("ecommerce:1", statement("marketing", "denied", at=T0 - 5000)),  # older than P1's grant: loses
    ]


def oracle(target: dict, statements: list[dict], now_ms: int) -> bool:
    """The consent rules, read independently: per purpose, for each channel the
    target uses, the latest statement on that channel or 'any' decides; a
    purpose with no statement is allowed only when granted by default."""
    defaults = {"service": True}
    for purpose in target["purposes"]:
        mine = [s for s in statements if s["purpose"] == purpose]
        channels = target.get("channels") or sorted({s["channel"] for s in mine} - {"any"}) or ["any"]
        allowed_somewhere, decided = False, False
        for channel in channels:
            covering = [s for s in mine if s["channel"] in (channel, "any")]
            if not covering:
                continue
            decided = True
            latest = max(covering, key=lambda s: (s["event_time"], s["status"] != "granted"))
            ok = (latest["status"] == "granted"
                  and latest["legal_basis"] in target.get("legal_bases", ["consent", "contract", "legitimate_interest"])
                  and (latest["expires_at"] is None or latest["expires_at"] > now_ms))
            allowed_somewhere |= ok
        if not (allowed_somewhere if decided else defaults.get(purpose, False)):
            return False
    return True


def _config(tmp_path) -> tuple[PipelineConfig, dict[str, str], object]:
    data = load_pipeline(None).model_dump(mode="json")
    # a new target, by configuration alone: a loyalty app keyed by card number
    data["targets"].append({"name": "loyalty_app", "purposes": ["service"], "key": "loyalty_id",
                            "fields": ["given_name", "loyalty_id", "emails"], "format": "avro"})
    tokens = {}
    for target in data["targets"]:
        token, digest = new_token()
        tokens[target["name"]] = token
        target["tokens_sha256"] = [digest]
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return PipelineConfig.model_validate(data), tokens, path


def _get(url: str, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_targets_hold_exactly_what_consent_allows_and_erasure_leaves_nothing(tmp_path):
    pipeline, tokens, config_path = _config(tmp_path)
    targets = {t["name"]: t for t in pipeline.model_dump(mode="json")["targets"]}
    configs = {t.name: t for t in pipeline.targets}

    def decode(name: str, value: bytes) -> dict:
        return decode_avro(value, configs[name]) if configs[name].format == "avro" else orjson.loads(value)

    with LocalHub(pipeline, tmp_path) as hub:
        worker = hub.worker(config_file=config_path)
        watcher = Watcher(hub.bootstrap, pipeline.all_topics())
        feeder = Feeder(hub.bootstrap)
        for records in PEOPLE.values():
            for record in records:
                feeder.send(f"raw.{record['source']}", f"{record['source']}:{record['source_id']}".encode(),
                            codec(CUSTOMER_EVENT).encode(record))
        feeder.flush()
        watcher.wait_until(lambda v: len(v.live("customer.golden")) == 6, quiet_s=1.5)
        plan = consent_plan(int(time.time() * 1000) + 8000)
        for member, st in plan:
            source, sid = member.split(":")
            feeder.send("consent.events", member.encode(),
                        codec(CONSENT_EVENT).encode({"source": source, "source_id": sid, "statement": st}))
        feeder.flush()
        view = watcher.wait_until(lambda v: any(v.live("mastered.marketing")), quiet_s=2.0)

        golden = open_goldens(hub, view.live("customer.golden"))
        gid_of = {p: next(g for g, rec in golden.items() if f"{r[0]['source']}:{r[0]['source_id']}" in rec["members"])
                  for p, r in PEOPLE.items()}
        assert len(set(gid_of.values())) == 6

        def statements_of(person_id: str) -> list[dict]:
            members = {f"{r['source']}:{r['source_id']}" for r in PEOPLE[person_id]}
            return [st for m, st in plan if m in members]

        def check_targets(now_ms: int, erased=()):
            for name, target in targets.items():
                topic = f"mastered.{name}"
                live = {k: decode(name, v) for k, v in watcher.view.live(topic).items()}
                expected = {}
                for person_id, gid in gid_of.items():
                    if person_id in erased or not oracle(target, statements_of(person_id), now_ms):
                        continue
                    key = gid if target["key"] == "golden_id" else golden[gid]["loyalty_id"]
                    if key:
                        expected[key] = gid
                assert set(live) == set(expected), (name, sorted(live), sorted(expected))
                for key, value in live.items():  # data minimisation, field by field
                    gid = expected[key]
                    assert set(value) == {"golden_id", *target["fields"]}, name
                    for field in target["fields"]:
                        want = golden[gid][field]
                        if not {"members", "lineage"} & set(target["fields"]):  # nor which records said it
                            inner = {"emails": "sources", "phones": "sources", "addresses": "sources",
                                     "consents": "subject", "survey": "source"}.get(field)
                            if inner and isinstance(want, list):
                                want = [{k: v for k, v in item.items() if k != inner} for item in want]
                            elif inner and want is not None:
                                want = {k: v for k, v in want.items() if k != inner}
                        assert value[field] == want, (name, field)

        check_targets(int(time.time() * 1000))
        assert gid_of["P3"] in watcher.view.live("mastered.marketing")  # until it expires
        # P2's grant and revocation may meet in one batch (never sent) or not (sent, then a tombstone): either way
        # check_targets above found P2 absent from marketing's latest values
        assert worker.metric("hub_consent_suppressed_total", target="pos", reason="consent_denied") >= 1
        card = decode("loyalty_app", watcher.view.live("mastered.loyalty_app")["L000000001"])
        assert set(card) == {"golden_id", "given_name", "loyalty_id", "emails"} and card["given_name"] == "Alice"
        # a target's schema: for its own token only (names are not to be enumerated)
        assert worker.get("/targets/loyalty_app/schema")[0] == 401
        assert _get(f"{worker.base_url}/targets/loyalty_app/schema", tokens["pos"])[0] == 403
        assert _get(f"{worker.base_url}/targets/no_such_target/schema", tokens["pos"])[0] == 403
        assert worker.get("/targets/no_such_target/schema")[0] == 401
        schema = orjson.loads(_get(f"{worker.base_url}/targets/loyalty_app/schema", tokens["loyalty_app"])[1])
        assert schema["format"] == "avro" and [f["name"] for f in schema["schema"]["fields"]] == [
            "golden_id", "given_name", "loyalty_id", "emails"]

        # expiry is enforced by the clock, with no new event
        watcher.wait_until(lambda v: v.latest["mastered.marketing"].get(gid_of["P3"], b"") is None,
                           timeout_s=30, quiet_s=0.5)
        assert watcher.view.reasons[("mastered.marketing", "consent_expired")] == 1
        check_targets(int(time.time() * 1000))

        # scoped access: a token reads its own target only
        base = f"{worker.base_url}/targets"
        status, body = _get(f"{base}/pos/customers/{gid_of['P1']}", tokens["pos"])
        assert status == 200 and orjson.loads(body) == orjson.loads(watcher.view.live("mastered.pos")[gid_of["P1"]])
        assert _get(f"{base}/pos/customers/{gid_of['P1']}", tokens["marketing"])[0] == 403
        assert _get(f"{base}/pos/customers/{gid_of['P1']}", None)[0] == 401
        status, body = _get(f"{base}/pos/customers/{gid_of['P1']}", "not-a-token")
        assert status == 401 and b"Alice" not in body
        assert _get(f"{base}/pos/customers/{gid_of['P4']}", tokens["pos"])[0] == 404  # service denied
        assert _get(f"{base}/marketing/customers/{gid_of['P2']}", tokens["marketing"])[0] == 404  # revoked

        # erasure: P5 disappears from every target, the golden topic and Redis
        feeder.send("erasure.requests", b"crm:5", codec(ERASURE_REQUEST).encode(
            {"source": "crm", "source_id": "5", "golden_id": None, "requester": "dpo-desk",
             "requested_at": int(time.time() * 1000)}))
        feeder.flush()
        gid5 = gid_of["P5"]
        watcher.wait_until(lambda v: v.latest["customer.golden"].get(gid5, b"") is None
                           and v.latest["mastered.loyalty_app"].get("L000000005", b"") is None, quiet_s=1.0)
        for name in ("pos", "contact_center", "loyalty_app"):
            assert watcher.view.reasons[(f"mastered.{name}", "erased")] == 1
        check_targets(int(time.time() * 1000), erased={"P5"})
        client = redis.Redis.from_url(hub.redis_url)
        traces = [b"erica", b"ellis", b"100005", b"L000000005", b"crm:5", b"pos:5", gid5.encode()]
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            blob = key + b" " + repr(_dump(client, key, kind)).encode()
            assert not any(t in blob.lower() for t in (x.lower() for x in traces)), key
        assert worker.metric("hub_erasures_total", outcome="erased") == 1

        # a later event for the same person starts from nothing
        feeder.send("raw.pos", b"pos:5", codec(CUSTOMER_EVENT).encode({**PEOPLE["P5"][1], "event_time": T0 + 99_000}))
        feeder.flush()
        view = watcher.wait_until(lambda v: v.live("mastered.loyalty_app").get("L000000005") is not None)
        reborn_id = decode("loyalty_app", view.live("mastered.loyalty_app")["L000000005"])["golden_id"]
        reborn = open_golden(hub, reborn_id, view.live("customer.golden")[reborn_id])
        assert reborn["members"] == ["pos:5"] and reborn["version"] == 1
        watcher.close()


def _dump(client, key, kind):
    kind = kind.decode()
    if kind == "string":
        return client.get(key)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "set":
        return sorted(client.smembers(key))
    if kind == "zset":
        return client.zrange(key, 0, -1)
    return None
