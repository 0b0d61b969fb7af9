"""Survey and NPS answers: their checks, their category, and the summary the
golden record carries, so service staff see an unhappy customer before they
speak to them.

Pure. An answer names a source record; a customer's answers are those of
every record merged into their golden record, the latest per survey. NPS
categories follow the usual cut: 9-10 promoter, 7-8 passive, 0-6 detractor.
"""

from __future__ import annotations

from datetime import datetime, timezone


def category(score: int) -> str:
    if score >= 9:
        return "promoter"
    if score >= 7:
        return "passive"
    return "detractor"


def problem(response: dict, now_ms: int, min_year: int, max_future_skew_s: int) -> str | None:
    """Why an answer cannot be used (a dead-letter reason), or None."""
    if not response["survey_id"].strip() or not response["source_id"]:
        return "missing_field"
    if not 0 <= response["score"] <= 10:
        return "absurd_value"
    earliest = int(datetime(min_year, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    if not earliest <= response["responded_at"] <= now_ms + max_future_skew_s * 1000:
        return "absurd_value"
    return None


def stored(response: dict) -> dict:
    """What is kept per answer: no free text, nothing beyond what the summary needs."""
    return {"survey_id": response["survey_id"], "score": response["score"],
            "responded_at": response["responded_at"], "channel": response.get("channel")}


def summary(answers_by_member: dict[str, list[dict]]) -> dict | None:
    """The golden record's `survey`: the last answer (by when it was given, a
    deterministic tie-break after) and the mean over the latest answer per survey."""
    latest: dict[str, tuple] = {}
    for member, answers in answers_by_member.items():
        for answer in answers:
            rank = (answer["responded_at"], member, answer["score"])
            if answer["survey_id"] not in latest or rank > latest[answer["survey_id"]][0]:
                latest[answer["survey_id"]] = (rank, member, answer)
    if not latest:
        return None
    _, member, last = max(latest.values(), key=lambda item: (item[0], item[2]["survey_id"]))
    scores = [answer["score"] for _, _, answer in latest.values()]
    return {"last_survey_at": last["responded_at"], "last_survey_id": last["survey_id"],
            "last_score": last["score"], "last_category": category(last["score"]), "responses": len(scores),
            "average_score": round(sum(scores) / len(scores), 2), "source": member}
