"""Unit tests for hub.surveys: NPS categories, checks, and the golden record's survey summary."""

from __future__ import annotations

import pytest

from hub import surveys
from hub.config import SurvivorshipConfig
from hub.survivorship import build_golden

T0 = 1_790_000_000_000


def answer(survey_id: str, score: int, at: int) -> dict:
    return {"survey_id": survey_id, "score": score, "responded_at": at, "channel": "email"}


@pytest.mark.parametrize("score,expected", [(10, "promoter"), (9, "promoter"), (8, "passive"), (7, "passive"),
                                            (6, "detractor"), (0, "detractor")])
def test_nps_categories(score, expected):
    assert surveys.category(score) == expected


@pytest.mark.parametrize("change,reason", [
    ({}, None), ({"score": 11}, "absurd_value"), ({"score": -1}, "absurd_value"),
    ({"responded_at": T0 + 3 * 86_400_000}, "absurd_value"), ({"responded_at": 0}, "absurd_value"),
    ({"survey_id": " "}, "missing_field"), ({"source_id": ""}, "missing_field"),
])
def test_problems(change, reason):
    response = {"source": "crm", "source_id": "C1", **answer("nps-q4", 7, T0 - 1000), **change}
    assert surveys.problem(response, T0, 1990, 86_400) == reason


def test_summary_takes_the_last_answer_and_the_latest_per_survey():
    summary = surveys.summary({
        "crm:C1": [answer("nps-q3", 9, T0 - 90_000), answer("nps-q4", 3, T0)],
        "pos:P3": [answer("nps-q4", 10, T0 - 5_000), answer("store-visit", 6, T0 - 1_000)],
    })
    assert summary == {"last_survey_at": T0, "last_survey_id": "nps-q4", "last_score": 3,
                       "last_category": "detractor", "responses": 3, "average_score": 6.0, "source": "crm:C1"}
    assert surveys.summary({}) is None


def test_summary_does_not_depend_on_order():
    items = [("a:1", [answer("s", 9, T0)]), ("b:2", [answer("s", 2, T0)]), ("c:3", [answer("t", 5, T0)])]
    results = {repr(surveys.summary(dict(order))) for order in (items, items[::-1], items[1:] + items[:1])}
    assert len(results) == 1


def test_golden_record_carries_the_summary():
    from hub.standardise import standardise_and_score

    record, quality = standardise_and_score({"source": "crm", "source_id": "C1", "op": "upsert", "event_time": T0,
                                             "record_type": "person", "given_name": "Anna"})
    record.pop("consents")
    contributions = {"crm:C1": {"record": record, "quality": quality}}
    golden = build_golden("G1", contributions, {}, SurvivorshipConfig(), {"crm:C1": [answer("nps", 2, T0)]})
    assert golden["survey"]["last_category"] == "detractor" and golden["survey"]["source"] == "crm:C1"
    assert build_golden("G1", contributions, {}, SurvivorshipConfig())["survey"] is None
