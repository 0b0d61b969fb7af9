"""Consent stage: consent statements into the consent store, and a recompute
request for the golden record they concern.

Statements name a source record (the place they were collected). The store
keeps the latest per (purpose, channel) by the statement's own time, so late
or repeated statements change nothing. A statement for a record the hub has
not seen yet waits in the store and applies when that record arrives.
"""

from __future__ import annotations



from hub import metrics
from hub.config import PipelineConfig
from hub.ports import ConsentStore, IdentityIndex
from hub.records import InMessage, OutMessage, StageError, member_key
from hub.schemas import CONSENT_EVENT
from hub.stages import StageOutput, decode_or_error, recompute_members

STAGE = "consent"


class ConsentStage:
    def __init__(self, config: PipelineConfig, index: IdentityIndex, store: ConsentStore):
        self.config = config
        self.index = index
        self.store = store
        self.purposes = {p.name for p in config.purposes}


    async def process(self, batch: list[InMessage], now_ms: int | None = None) -> StageOutput:
        out: list[OutMessage] = []
        statements: dict[str, list[dict]] = {}
        for message in batch:
            event = decode_or_error(STAGE, CONSENT_EVENT, message.value)
            if isinstance(event, StageError) or event["statement"]["purpose"] not in self.purposes:
                error = event if isinstance(event, StageError) else StageError(STAGE, "unknown_purpose", "")
                metrics.CONSENT_EVENTS.labels("rejected").inc()
                metrics.DLQ.labels("consent", error.stage, error.reason).inc()
                out.append(error.dead_letter(message, self.config.topics.consent_dlq))
                continue
            metrics.CONSENT_EVENTS.labels("received").inc()
            statements.setdefault(member_key(event["source"], event["source_id"]), []).append(event["statement"])
        changed = [m for m, did in (await self.store.put(statements)).items() if did]
        out += await recompute_members(self.index, changed, self.config.topics.linked, "consent_changed",
                                       metrics.CONSENT_EVENTS)
        return StageOutput(out)
