"""A data steward's un-merge (split) and force link: applied to the index and
the golden records, honoured by records that arrive later, and the same
outcome when everything is replayed into a fresh hub in another order."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hub.config import load_pipeline
from hub.schemas import AUDIT, CUSTOMER_EVENT, GOLDEN, STEWARD_ACTION, codec
from hub.testing.harness import Feeder, LocalHub, Watcher, wait_caught_up, worker_input_topics

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000) - 60_000


def record(source, sid, given, family, email=None, phone=None, at=NOW):
    return (f"raw.{source}", f"{source}:{sid}".encode(), codec(CUSTOMER_EVENT).encode({
        "source": source, "source_id": sid, "event_time": at, "given_name": given, "family_name": family,
        "emails": [{"address": email}] if email else [], "phones": [{"number": phone}] if phone else []}))


# two people sharing an e-mail and a phone (a couple's family contact): the matcher merges them
FIRST = [record("crm", "C1", "Anna", "Smith", "smith.family@gmail.com", "07911 123456"),
         record("pos", "P3", "Anna", "Smith", "smith.family@gmail.com", "07911 123456", at=NOW + 1)]
# one person the matcher cannot link (no shared identifier)
BOB = [record("crm", "C2", "Bob", "Jones", "bob.jones@yahoo.co.uk"),
       record("pos", "P8", "Robert", "Jones", phone="07700 900777")]
LATER = [record("pos", "P3", "Anna", "Smith", "smith.family@gmail.com", "07911 123456", at=NOW + 5),  # update
         record("ecommerce", "E9", "Anna", "Smith", "smith.family@gmail.com", "07911 123456", at=NOW + 6)]


def groups(view) -> set[frozenset]:
    return {frozenset(codec(GOLDEN).decode(v)["members"]) for v in view.live("customer.golden").values()}


def steward_action(action, member, others) -> bytes:
    return codec(STEWARD_ACTION).encode({"action": action, "member": member, "others": others, "actor": "steward-1",
                                         "reason": None, "at": NOW + 3})


def settled(hub, pipeline, watcher, quiet_s: float = 1.0):
    """What the worker was fed is done (its group at the end of all it reads) and the topics are quiet."""
    wait_caught_up(hub.bootstrap, "hub", worker_input_topics(pipeline))
    return watcher.wait_until(lambda v: True, quiet_s=quiet_s)


def test_split_and_link_hold_for_later_records_and_replay(tmp_path):
    pipeline = load_pipeline(None)
    with LocalHub(pipeline, tmp_path / "one") as hub:
        hub.worker()
        watcher = Watcher(hub.bootstrap, pipeline.all_topics())
        feeder = Feeder(hub.bootstrap)
        for event in FIRST + BOB:
            feeder.send(*event)
        feeder.flush()
        view = settled(hub, pipeline, watcher)
        assert frozenset({"crm:C1", "pos:P3"}) in groups(view)
        assert {frozenset({"crm:C2"}), frozenset({"pos:P8"})} <= groups(view)

        env = {**os.environ, "HUB_KAFKA__BOOTSTRAP_SERVERS": hub.bootstrap, "HUB_REDIS__URL": hub.redis_url}
        # the CLI acts as the steward its token belongs to (hub user token), not as whoever it says it is
        done = subprocess.run([sys.executable, "-m", "hub", "user", "add", "steward-1", "--role", "steward",
                               "--password-stdin"], env=env, input="a long enough password\n", capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        token = subprocess.run([sys.executable, "-m", "hub", "user", "token", "steward-1"], env=env,
                               capture_output=True, text=True, timeout=60).stdout.strip()
        env["HUB_STEWARD_TOKEN"] = token
        hub_cli = [sys.executable, "-m", "hub", "steward"]
        done = subprocess.run(hub_cli + ["split", "pos", "P3"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "split: pos:P3 / crm:C1" in done.stdout  # it found whom P3 was merged with
        assert done.stdout.strip().endswith("as steward-1")
        done = subprocess.run(hub_cli + ["link", "crm", "C2", "--with", "pos:P8"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        expected = {frozenset({"crm:C1"}), frozenset({"pos:P3"}), frozenset({"crm:C2", "pos:P8"})}
        view = watcher.wait_until(lambda v: groups(v) == expected, quiet_s=1.5)
        assert len(view.live("mastered.pos")) == 3
        kinds = [codec(AUDIT).decode(v)["kind"] for v in view.latest["audit"].values() if v]
        assert kinds.count("steward_action") == 2

        # later records: P3's update stays apart; E9 matches both Annas, but may not join them again
        for event in LATER:
            feeder.send(*event)
        feeder.flush()
        view = settled(hub, pipeline, watcher, quiet_s=1.5)
        final_one = groups(view)
        annas = [g for g in final_one if g & {"crm:C1", "pos:P3", "ecommerce:E9"}]
        assert len(annas) == 2 and not any({"crm:C1", "pos:P3"} <= g for g in annas)
        assert frozenset({"crm:C2", "pos:P8"}) in final_one
        watcher.close()

    # replay into a fresh hub, the steward's decisions first: same customers
    with LocalHub(pipeline, tmp_path / "two") as hub:
        hub.worker()
        watcher = Watcher(hub.bootstrap, pipeline.all_topics())
        feeder = Feeder(hub.bootstrap)
        feeder.send("steward.actions", b"pos:P3", steward_action("split", "pos:P3", ["crm:C1"]))
        feeder.send("steward.actions", b"crm:C2", steward_action("link", "crm:C2", ["pos:P8"]))
        feeder.flush()
        watcher.wait_until(lambda v: [codec(AUDIT).decode(x)["kind"] for x in v.latest["audit"].values() if x].count(
            "steward_action") == 2)  # beside them: the worker's config_changed event
        for event in FIRST + BOB + LATER:
            feeder.send(*event)
            feeder.flush()
            time.sleep(0.05)
        view = settled(hub, pipeline, watcher, quiet_s=1.5)
        replayed = groups(view)
        assert frozenset({"crm:C2", "pos:P8"}) in replayed
        assert not any({"crm:C1", "pos:P3"} <= g for g in replayed)
        assert len([g for g in replayed if g & {"crm:C1", "pos:P3", "ecommerce:E9"}]) == 2
        watcher.close()
