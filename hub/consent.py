"""Consent evaluation: may this golden record go to this target, now?

Pure. A target needs every one of its purposes allowed: the winning statement
for that purpose (on one of the target's channels, or `any`) must be granted,
on a legal basis the target accepts, already effective and not expired. A
purpose marked granted_by_default (service under contract) is allowed until a
statement denies or revokes it.
"""

from __future__ import annotations

from hub.config import PurposeConfig, TargetConfig

ALLOWED = "allowed"
# Reasons a record is withheld (closed vocabulary: metric labels and hub.reason headers)
NO_CONSENT = "no_consent"
DENIED = "consent_denied"
REVOKED = "consent_revoked"
EXPIRED = "consent_expired"
NOT_YET_EFFECTIVE = "consent_not_yet_effective"
LEGAL_BASIS = "legal_basis_not_accepted"
RECORD_TYPE = "record_type_not_accepted"


def _judge(st: dict, target: TargetConfig, now_ms: int) -> str:
    if st["status"] == "denied":
        return DENIED
    if st["status"] == "revoked":
        return REVOKED
    if st["legal_basis"] not in target.legal_bases:
        return LEGAL_BASIS
    if st["expires_at"] is not None and st["expires_at"] <= now_ms:
        return EXPIRED
    if st["effective_at"] is not None and st["effective_at"] > now_ms:
        return NOT_YET_EFFECTIVE
    return ALLOWED


def _latest(statements: list[dict]) -> dict:
    # on equal times the restrictive statement wins
    return max(statements, key=lambda st: (st["event_time"], st["status"] != "granted"))


def _purpose_verdict(statements: list[dict], purpose: PurposeConfig, target: TargetConfig, now_ms: int) -> str:
    """Per channel the target uses, the latest statement covering that channel
    (its own or `any`) decides; one allowed channel is enough."""
    mine = [st for st in statements if st["purpose"] == purpose.name]
    channels = target.channels or sorted({st["channel"] for st in mine if st["channel"] != "any"}) or ["any"]
    deciding = []
    for channel in channels:
        covering = [st for st in mine if st["channel"] in (channel, "any")]
        if covering:
            deciding.append(_latest(covering))
    if not deciding:
        return ALLOWED if purpose.granted_by_default else NO_CONSENT
    verdicts = [_judge(st, target, now_ms) for st in deciding]
    if ALLOWED in verdicts:
        return ALLOWED
    return _judge(_latest(deciding), target, now_ms)


def evaluate(consents: list[dict], target: TargetConfig, purposes: dict[str, PurposeConfig], now_ms: int) -> str:
    """ALLOWED, or the reason the target must not hold this record.
    `consents` are the golden record's winning statements ({subject, statement})."""
    return evaluate_purposes(consents, target, purposes, now_ms)[0]


def evaluate_purposes(consents: list[dict], target: TargetConfig, purposes: dict[str, PurposeConfig],
                      now_ms: int) -> tuple[str, str]:
    """(verdict, the purpose it is about): ALLOWED with "", or the first purpose that fails."""
    statements = [c["statement"] for c in consents]
    for name in target.purposes:
        verdict = _purpose_verdict(statements, purposes[name], target, now_ms)
        if verdict != ALLOWED:
            return verdict, name
    return ALLOWED, ""


def target_verdict(golden: dict, target: TargetConfig, purposes: dict[str, PurposeConfig], now_ms: int) -> str:
    """ALLOWED, or why this target must not hold this golden record."""
    return target_verdict_purpose(golden, target, purposes, now_ms)[0]


def target_verdict_purpose(golden: dict, target: TargetConfig, purposes: dict[str, PurposeConfig],
                           now_ms: int) -> tuple[str, str]:
    """(verdict, purpose): the purpose is "" when the verdict is not about consent."""
    if golden["record_type"] not in target.record_types:
        return RECORD_TYPE, ""
    return evaluate_purposes(golden["consents"], target, purposes, now_ms)


def next_change_ms(consents: list[dict], now_ms: int) -> int | None:
    """When the verdict can next change with no new event (an expiry or a start)."""
    times = [t for c in consents for t in (c["statement"]["expires_at"], c["statement"]["effective_at"])
             if t is not None and t > now_ms]
    return min(times) if times else None
