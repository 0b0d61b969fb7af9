"""Erasure stage: right-to-be-forgotten requests to an `erase` instruction for
the master, which owns the golden record's partition.

A request names a source record or a golden id; the whole customer (every
member of the golden record) is erased. A request for someone the hub does
not hold still removes any consent or survey answer waiting for that source
record.
"""

from __future__ import annotations


from hub import metrics
from hub.config import PipelineConfig
from hub.messages import link_instruction
from hub.ports import ConsentStore, IdentityIndex, SurveyStore
from hub.records import InMessage, OutMessage, StageError, member_key
from hub.schemas import ERASURE_REQUEST, LINKED, codec
from hub.stages import StageOutput, decode_or_error

STAGE = "erasure"


class ErasureStage:
    def __init__(self, config: PipelineConfig, index: IdentityIndex, consents: ConsentStore, surveys: SurveyStore):
        self.config = config
        self.index = index
        self.consents = consents
        self.surveys = surveys
        self.linked = codec(LINKED)


    async def process(self, batch: list[InMessage]) -> StageOutput:
        out: list[OutMessage] = []
        requests = []
        for message in batch:
            request = decode_or_error(STAGE, ERASURE_REQUEST, message.value)
            if not isinstance(request, StageError) and not request["golden_id"] and not (
                    request["source"] and request["source_id"]):
                request = StageError(STAGE, "missing_field", "name a golden_id, or a source and source_id")
            if isinstance(request, StageError):
                metrics.DLQ.labels("erasure", request.stage, request.reason).inc()
                out.append(request.dead_letter(message, self.config.topics.erasure_dlq))
                continue
            requests.append(request)
        members = [member_key(r["source"], r["source_id"]) for r in requests if not r["golden_id"]]
        linked = await self.index.members(members)
        survivors = await self.index.resolve_forward([r["golden_id"] for r in requests if r["golden_id"]])
        unknown = [m for m in members if m not in linked]
        await self.consents.forget(unknown)  # consent that waited for a record never seen
        await self.surveys.forget_surveys(unknown)  # and survey answers
        await self.index.unlink(unknown)  # and when a source deleted it
        for request in requests:
            if request["golden_id"]:
                gid = survivors[request["golden_id"]]
            else:
                entry = linked.get(member_key(request["source"], request["source_id"]))
                if entry is None:
                    metrics.ERASURES.labels("not_held").inc()
                    continue
                gid = entry.golden_id
            instruction = link_instruction(gid, "erase", f"erasure requested by {request['requester'][:128]}")
            out.append(OutMessage(self.config.topics.linked, gid.encode(), self.linked.encode(instruction)))
        return StageOutput(out)
