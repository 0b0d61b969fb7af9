"""B2B and B2C on the real broker and Redis: a contact linked to its account's
golden record; a lead converted into a contact keeps its golden record and
history; people whose surname and address agree share a household."""

from __future__ import annotations

import time

import pytest

from hub.config import load_pipeline
from hub.connectors.kafka import read_topic
from hub.history import rebuild
from hub.schemas import CUSTOMER_EVENT, codec
from hub.testing.harness import Feeder, LocalHub, Watcher, open_audits, open_goldens

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 60_000


def event(source, sid, at=T0, **fields):
    return {"source": source, "source_id": sid, "event_time": at, **fields}


ACME = event("crm", "A-1", record_type="organisation", organisation_name="Acme Widgets Ltd",
             phones=[{"number": "0113 496 0000"}],
             addresses=[{"line1": "1 Works Lane", "city": "Leeds", "postcode": "LS9 8AB", "country": "GB"}])
JANE = event("crm", "C-7", given_name="Jane", family_name="Doe", organisation_name="Acme Widgets Ltd",
             emails=[{"address": "jane.doe@acme.example"}], account_ref="crm:A-1", lifecycle="contact")
LEAD = event("ecommerce", "L-5", given_name="Jon", family_name="Leadbetter", lifecycle="lead",
             emails=[{"address": "jon.l@mail.example"}])
CONVERTED = event("crm", "C-8", at=T0 + 5000, given_name="Jonathan", family_name="Leadbetter", lifecycle="contact",
                  emails=[{"address": "jonathan.leadbetter@acme.example"}], account_ref="crm:A-1",
                  converted_from="ecommerce:L-5")
HOME = {"line1": "5 Elm Road", "city": "Leeds", "postcode": "LS6 2AB", "country": "GB"}
TOM = event("pos", "H-1", given_name="Tom", family_name="Baker", birth_date="1970-03-04", addresses=[HOME],
            emails=[{"address": "tom.baker@mail.example"}])
SUE = event("pos", "H-2", given_name="Sue", family_name="BAKER", birth_date="1972-05-06",
            addresses=[{**HOME, "line1": "5 ELM ROAD", "postcode": "ls62ab"}], emails=[{"address": "sue@mail.example"}])
LODGER = event("pos", "H-3", given_name="Ian", family_name="Smith", birth_date="1990-01-01", addresses=[HOME],
               emails=[{"address": "ian.smith@mail.example"}])


def test_contacts_accounts_leads_and_households(tmp_path):
    pipeline = load_pipeline(None)
    with LocalHub(pipeline, tmp_path) as hub:
        hub.worker()
        watcher = Watcher(hub.bootstrap, [pipeline.topics.golden])
        feeder = Feeder(hub.bootstrap)

        def golden_of(member: str) -> dict | None:
            found = [g for g in open_goldens(hub, watcher.view.live(pipeline.topics.golden)).values()
                     if member in g["members"]]
            return found[0] if found else None

        def send(*records) -> None:
            for record in records:
                feeder.send(f"raw.{record['source']}", f"{record['source']}:{record['source_id']}".encode(),
                            codec(CUSTOMER_EVENT).encode(record))
            feeder.flush()

        send(ACME, LEAD, TOM, SUE, LODGER)
        watcher.wait_until(lambda v: all(golden_of(m) for m in ("crm:A-1", "ecommerce:L-5", "pos:H-1", "pos:H-2",
                                                                "pos:H-3")), quiet_s=0.5)
        send(JANE)
        watcher.wait_until(lambda v: golden_of("crm:C-7") is not None, quiet_s=0.3)

        # B2B: the account is mastered like a person; the contact points at its golden record
        acme, jane = golden_of("crm:A-1"), golden_of("crm:C-7")
        assert acme["record_type"] == "organisation" and acme["organisation_name"] == "Acme Widgets Ltd"
        assert jane["members"] == ["crm:C-7"] and jane["account_golden_id"] == acme["golden_id"]
        assert jane["lineage"]["account_ref"]["source_id"] == "C-7" and jane["lifecycle"] == "contact"

        # a lead converted into a CRM contact joins the lead's golden record though nothing else matches
        lead = golden_of("ecommerce:L-5")
        assert lead["lifecycle"] == "lead"
        lead_seen_ms = int(time.time() * 1000)  # history is kept in processing time
        send(CONVERTED)
        watcher.wait_until(lambda v: len(golden_of("ecommerce:L-5")["members"]) == 2, quiet_s=0.3)
        contact = golden_of("crm:C-8")
        assert contact["golden_id"] == lead["golden_id"] and contact["members"] == ["crm:C-8", "ecommerce:L-5"]
        assert contact["lifecycle"] == "contact" and contact["lineage"]["lifecycle"]["source"] == "crm"
        assert contact["account_golden_id"] == acme["golden_id"]
        assert {e["address"] for e in contact["emails"]} == {"jon.l@mail.example", "jonathan.leadbetter@acme.example"}
        # ...without losing its history: the lead's past state is still there
        audits = open_audits(hub, read_topic(hub.bootstrap, pipeline.topics.audit))
        before = rebuild(audits, lead["golden_id"], lead_seen_ms)
        assert before["lifecycle"] == "lead" and before["members"] == ["ecommerce:L-5"]
        assert rebuild(audits, lead["golden_id"])["lifecycle"] == "contact"

        # B2C: the Bakers share a household (case and spacing do not matter); the lodger does not
        tom, sue, ian = golden_of("pos:H-1"), golden_of("pos:H-2"), golden_of("pos:H-3")
        assert len({tom["golden_id"], sue["golden_id"], ian["golden_id"]}) == 3
        assert tom["household_id"] and tom["household_id"] == sue["household_id"] != ian["household_id"]
        assert acme["household_id"] is None and "Baker" not in tom["household_id"]
        watcher.close()
