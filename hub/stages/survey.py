"""Survey stage: survey / NPS answers into the survey store, and a recompute
request for the golden record they concern.

Like consent: an answer names a source record; the store keeps the latest
answer per survey by its own time, so late or repeated answers change
nothing; an answer for a record the hub has not seen yet waits in the store
and applies when that record arrives. Bad answers go to the DLQ with a reason.
"""

from __future__ import annotations

import time

from hub import metrics, surveys
from hub.config import PipelineConfig
from hub.ports import IdentityIndex, SurveyStore
from hub.records import InMessage, OutMessage, StageError, member_key
from hub.schemas import LINKED, SURVEY_RESPONSE, codec
from hub.stages import StageOutput, decode_or_error

STAGE = "survey"


class SurveyStage:
    def __init__(self, config: PipelineConfig, index: IdentityIndex, store: SurveyStore):
        self.config = config
        self.index = index
        self.store = store
        self.linked = codec(LINKED)

    async def process(self, batch: list[InMessage], now_ms: int | None = None) -> StageOutput:
        now_ms = now_ms or int(time.time() * 1000)
        quality = self.config.quality
        out: list[OutMessage] = []
        answers: dict[str, list[dict]] = {}
        for message in batch:
            response = decode_or_error(STAGE, SURVEY_RESPONSE, message.value)
            if not isinstance(response, StageError):
                reason = surveys.problem(response, now_ms, quality.min_event_year, quality.max_future_skew_s)
                if reason:
                    response = StageError(STAGE, reason, "score must be 0..10, responded_at a plausible time, "
                                                         "survey_id and source_id given")
            if isinstance(response, StageError):
                metrics.SURVEY_EVENTS.labels("rejected").inc()
                metrics.DLQ.labels("survey", response.stage, response.reason).inc()
                out.append(response.dead_letter(message, self.config.topics.survey_dlq))
                continue
            metrics.SURVEY_EVENTS.labels("received").inc()
            answers.setdefault(member_key(response["source"], response["source_id"]), []).append(
                surveys.stored(response))
        changed = [m for m, did in (await self.store.put_surveys(answers)).items() if did]
        linked = await self.index.members(changed)
        for member in changed:
            entry = linked.get(member)
            if entry is None:
                metrics.SURVEY_EVENTS.labels("pending").inc()
                continue
            metrics.SURVEY_EVENTS.labels("applied").inc()
            request = {"golden_id": entry.golden_id, "kind": "recompute", "canonical": None, "decision": None,
                       "absorbed_golden_ids": [], "cause": "survey_received"}
            out.append(OutMessage(self.config.topics.linked, entry.golden_id.encode(), self.linked.encode(request)))
        return StageOutput(out)
