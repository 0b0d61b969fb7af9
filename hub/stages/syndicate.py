"""Syndicate stage: golden records to each target's topic, within consent.

For every target: if consent covers it, send the target's projection (only
when that projection changed since the target's last record); if not, send
nothing, or a tombstone with a `hub.reason` header when the target holds the
record. What each target last received is saved only after delivery, so a
crash can cause a re-send, never a gap. A key a target is about to receive
for the first time is noted before delivery (`<target>|sending`): a crash
after delivery, before the save, must not leave a record there that a later
deletion, consent withdrawal or key change would not know to tombstone.

A golden record read back from its topic (the staged engine, a second
consumer group) may be older than the one the master holds now: a replay
re-reads every version. Syndicating it would send the target an old record
and then the current one again, so the stage sends what the golden store
holds now, and leaves a record deleted since to its tombstone further on the
topic (which carries the deletion's reason). A record the master step of the
same pass hands on is current by construction and is not read again.
"""

from __future__ import annotations

import time
from collections import Counter

from hub import metrics
from hub.config import PipelineConfig
from hub.consent import ALLOWED, next_change_ms, target_verdict_purpose
from hub.crypto import Keyring
from hub.ports import GoldenStore, SyndicationState
from hub.projection import encode, fingerprint, project, target_key
from hub.records import EVENT_TS_HEADER, REASON_HEADER, InMessage, OutMessage
from hub.schemas import GOLDEN
from hub.stages import StageOutput
from hub.topic_seal import TopicValues

STAGE = "syndicate"
NO_KEY = "no_key"


class SyndicateStage:
    def __init__(self, config: PipelineConfig, state: SyndicationState, keyring: Keyring | None = None,
                 goldens: GoldenStore | None = None):
        """`keyring` opens the golden records the master sealed (hub.topic_seal); values in clear need none.
        `goldens` is where the stage checks that a golden record read from its topic is still current;
        without it (a stage fed only by the master step of its own pass) every record is taken as it comes."""
        self.config = config
        self.state = state
        self.goldens = goldens
        self.golden_values = TopicValues(GOLDEN, config.topics.golden, None, keyring)
        self.purposes = {p.name: p for p in config.purposes}
        # each target's metric children, looked up once: a pass meets every target for every golden record
        self._out = {t.name: metrics.EVENTS_OUT.labels(t.name) for t in config.targets}
        self._unchanged = {t.name: metrics.UNCHANGED.labels(t.name) for t in config.targets}
        self._end_to_end = {t.name: metrics.END_TO_END.labels(t.name) for t in config.targets}
        self._ahead = None  # (golden id -> record handed on, their syndication state) read ahead by the master

    async def read_ahead(self, handed: dict[str, dict | None]) -> None:
        """Read the syndication state of the golden records the master step of this pass hands on (id -> the
        record, None for a tombstone), with the master's save: the process that follows takes it if it gets
        those very records (the same objects), and reads for itself otherwise."""
        self._ahead = (handed, await self.state.load_syndication_soon(sorted(handed)))

    async def process(self, batch: list[InMessage], now_ms: int | None = None) -> StageOutput:
        now_ms = now_ms or int(time.time() * 1000)
        latest: dict[str, tuple[dict | None, str]] = {}
        read_back: set[str] = set()
        for message in batch:  # only the last version of a golden record in a batch matters
            gid = message.key.decode()
            golden = message.record  # handed on by the master step of the same pass (hub.engine)
            if golden is None and message.value is not None:
                golden = self.golden_values.decode(message.value, message.key)
                read_back.add(gid)
            else:
                read_back.discard(gid)
            reason = (message.header(REASON_HEADER) or b"golden_deleted").decode()
            latest[gid] = (golden, reason)
        if read_back and self.goldens is not None:
            await self._bring_up_to_date(latest, read_back)
        (handed, read), self._ahead = self._ahead or ({}, None), None
        if read is not None and all(gid in handed and handed[gid] is golden for gid, (golden, _) in latest.items()):
            held = read()
        else:
            held = await self.state.load_syndication(list(latest))
        out: list[OutMessage] = []
        updates: dict[str, dict[str, tuple[str, str] | None]] = {}
        sending: dict[str, dict[str, tuple[str, str]]] = {}
        due: dict[str, int | None] = {}
        sent_to: Counter = Counter()  # per target, counted once per pass
        unchanged: Counter = Counter()
        waited: dict[str, list[float]] = {}  # per target: seconds from the source event produced to now
        for gid, (golden, gone_reason) in latest.items():
            sent = held.get(gid, {})
            changes = updates.setdefault(gid, {})
            for target in self.config.targets:
                previous = sent.get(target.name)
                # keys the target holds or may hold: the last confirmed, and one a crash left unconfirmed
                maybe = sent.get(f"{target.name}|sending")
                held_keys = list(dict.fromkeys(k for k in (previous and previous[0], maybe and maybe[0]) if k))
                if maybe:
                    changes[f"{target.name}|sending"] = None
                if golden is None:
                    for held_key in held_keys:
                        out.append(self._tombstone(target, held_key, gone_reason))
                    if previous:
                        changes[target.name] = None
                    continue
                verdict, purpose = target_verdict_purpose(golden, target, self.purposes, now_ms)
                key = target_key(golden, target) if verdict == ALLOWED else None
                if verdict == ALLOWED and not key:
                    verdict = NO_KEY
                if verdict != ALLOWED:
                    metrics.SUPPRESSED.labels(target.name, verdict, purpose).inc()
                    for held_key in held_keys:
                        out.append(self._tombstone(target, held_key, verdict, purpose))
                    if previous:
                        changes[target.name] = None
                    continue
                payload = encode(project(golden, target), target)
                print_ = fingerprint(payload)
                if previous == (key, print_) and not maybe:
                    unchanged[target.name] += 1
                    continue
                for held_key in held_keys:
                    if held_key != key:
                        out.append(self._tombstone(target, held_key, "key_changed"))
                if not previous or previous[0] != key:
                    sending.setdefault(gid, {})[f"{target.name}|sending"] = (key, "")
                    changes[f"{target.name}|sending"] = None  # confirmed once delivered
                produced_at = golden.get("trigger_produced_at")
                headers = [(EVENT_TS_HEADER, str(produced_at).encode())] if produced_at else []
                out.append(OutMessage(target.output_topic, key.encode(), payload, headers))
                sent_to[target.name] += 1
                if produced_at:
                    waited.setdefault(target.name, []).append(max(0.0, (now_ms - produced_at) / 1000))
                changes[target.name] = (key, print_)
            if golden is not None:
                due[gid] = next_change_ms(golden["consents"], now_ms)
            else:
                due[gid] = None
        for name, count in sent_to.items():
            self._out[name].inc(count)
        for name, seconds in waited.items():
            metrics.observe_all(self._end_to_end[name], seconds)
        for name, count in unchanged.items():
            self._unchanged[name].inc(count)
        await self.state.save_syndication(sending)

        async def remember() -> None:
            await self.state.save_syndication({g: c for g, c in updates.items() if c})
            await self.state.schedule(due)

        return StageOutput(out, remember)

    async def _bring_up_to_date(self, latest: dict[str, tuple[dict | None, str]], read_back: set[str]) -> None:
        """Replace each golden record read from the topic by the one the master holds now when that one is
        newer; drop one the master has deleted since (its tombstone, with the reason, is further on)."""
        now = await self.goldens.goldens(sorted(read_back))
        for gid in read_back:
            current = now.get(gid)
            if current is None:
                metrics.SUPERSEDED.labels("deleted").inc()
                del latest[gid]
            elif current["version"] > latest[gid][0]["version"]:
                metrics.SUPERSEDED.labels("changed").inc()
                latest[gid] = (current, latest[gid][1])

    def _tombstone(self, target, key: str, reason: str, purpose: str = "") -> OutMessage:
        metrics.TOMBSTONES.labels(target.name, reason, purpose).inc()
        return OutMessage(target.output_topic, key.encode(), None, [(REASON_HEADER, reason.encode())])
