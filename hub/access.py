"""Who may read what: API tokens scoped to one target, stored as SHA-256
digests in the configuration, compared in constant time.

Pure. `authorize` answers 200 (this token reads this target), 401 (no token
or an unknown one) or 403 (a valid token for another target), and takes the
same time whichever target a token belongs to.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from hub.config import PipelineConfig

OK, UNAUTHENTICATED, FORBIDDEN = 200, 401, 403


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token and the digest to put in the configuration."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def bearer(header: str | None) -> str | None:
    if not header or not header.startswith("Bearer "):
        return None
    token = header[7:].strip()
    return token or None


def authorize(config: PipelineConfig, token: str | None, target: str) -> int:
    if not token:
        return UNAUTHENTICATED
    presented = digest(token)
    owner = None
    for candidate in config.targets:
        for stored in candidate.tokens_sha256:
            if hmac.compare_digest(presented, stored) and owner is None:
                owner = candidate.name
    if owner is None:
        return UNAUTHENTICATED
    return OK if owner == target else FORBIDDEN


def token_label(config: PipelineConfig, token: str | None) -> str:
    """Who a request comes from, for metrics and the access audit: a configured token's digest, shortened
    (a bounded set); "unknown" for any other token, "none" without one. Never the token."""
    if not token:
        return "none"
    presented = digest(token)
    for candidate in config.targets:
        for stored in candidate.tokens_sha256:
            if hmac.compare_digest(presented, stored):
                return presented[:12]
    return "unknown"


def authorize_steward(config: PipelineConfig, token: str | None) -> int:
    """Data stewards read match explanations: their own tokens, never a target's."""
    if not token:
        return UNAUTHENTICATED
    presented = digest(token)
    found = False
    for stored in config.steward_tokens_sha256:
        found |= hmac.compare_digest(presented, stored)
    return OK if found else UNAUTHENTICATED
