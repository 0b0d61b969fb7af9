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


def _purpose_verdict(statements: list[dict], purpose: PurposeConfig, target: TargetConfig, now_ms: int) -> str:
    relevant = [st for st in statements if st["purpose"] == purpose.name
                and (st["channel"] == "any" or not target.channels or st["channel"] in target.channels)]
    if not relevant:
        return ALLOWED if purpose.granted_by_default else NO_CONSENT
    verdicts = []
    for st in relevant:
        if st["status"] == "denied":
            verdicts.append(DENIED)
        elif st["status"] == "revoked":
            verdicts.append(REVOKED)
        elif st["legal_basis"] not in target.legal_bases:
            verdicts.append(LEGAL_BASIS)
        elif st["expires_at"] is not None and st["expires_at"] <= now_ms:
            verdicts.append(EXPIRED)
        elif st["effective_at"] is not None and st["effective_at"] > now_ms:
            verdicts.append(NOT_YET_EFFECTIVE)
        else:
            verdicts.append(ALLOWED)
    if ALLOWED in verdicts:  # one consented channel is enough
        return ALLOWED
    latest = max(range(len(relevant)), key=lambda i: relevant[i]["event_time"])
    return verdicts[latest]


def evaluate(consents: list[dict], target: TargetConfig, purposes: dict[str, PurposeConfig], now_ms: int) -> str:
    """ALLOWED, or the reason the target must not hold this record.
    `consents` are the golden record's winning statements ({subject, statement})."""
    statements = [c["statement"] for c in consents]
    for name in target.purposes:
        verdict = _purpose_verdict(statements, purposes[name], target, now_ms)
        if verdict != ALLOWED:
            return verdict
    return ALLOWED


def next_change_ms(consents: list[dict], now_ms: int) -> int | None:
    """When the verdict can next change with no new event (an expiry or a start)."""
    times = [t for c in consents for t in (c["statement"]["expires_at"], c["statement"]["effective_at"])
             if t is not None and t > now_ms]
    return min(times) if times else None
