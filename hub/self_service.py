"""Customer self-service: signed, expiring links, and what a customer's
answers become.

Pure. A link names one source record (`<source>:<source_id>`, the customer
as a source system knows them) and an expiry, signed with HMAC-SHA256 under
a key id (`kid`), so keys can rotate: the first key signs, every key
verifies. The page a link opens shows that record's golden record and
nothing else; the link carries no personal value.

What the customer confirms or corrects becomes an event of the
`self_service` source (source id: the linked record's key), an upsert of
every value they confirmed, stated now: survivorship weighs it by the
source's priority, and each confirmed value's `confirmed_at` moves to now,
so it is fresh again (data decay). E-mails, phones and addresses the
customer gives are marked verified (the customer stated them through a
link only they were given), which makes them the preferred ones. The event
names the linked record in `converted_from`, so the self-service record
joins that customer's golden record whatever the matcher would score. Consent choices
become consent statements (hub.ConsentEvent) for the linked record, only
for the (purpose, channel) slots whose answer differs from what the hub
holds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson

SOURCE = "self_service"


class LinkError(ValueError):
    """A link that does not open: malformed, forged, signed with an unknown key, or expired."""


@dataclass(frozen=True, slots=True)
class Link:
    member: str      # <source>:<source_id>
    expires_ms: int
    link_id: str     # random, names the link in the audit trail


def parse_keys(text: str) -> list[tuple[str, bytes]]:
    """`kid:secret,kid:secret`: the first signs, all verify. A secret is any
    string of 32 characters or more (e.g. `openssl rand -base64 32`)."""
    keys = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        kid, sep, secret = part.partition(":")
        if not sep or not kid or len(kid) > 16 or not kid.isalnum():
            raise ValueError("each key is kid:secret with a short alphanumeric kid")
        if len(secret) < 32:
            raise ValueError(f"key {kid}: the secret must be at least 32 characters")
        keys.append((kid, secret.encode()))
    if not keys:
        raise ValueError("no key given")
    return keys


def keys_for(configured: str | None, pii_key: str) -> list[tuple[str, bytes]]:
    """The configured keys (HUB_WORKBENCH__LINK_KEYS), else one derived from
    the PII key, so a development setup works without one."""
    if configured:
        return parse_keys(configured)
    return [("d0", hashlib.blake2s(b"hub-self-service-links", key=pii_key.encode()[:32]).hexdigest().encode())]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, b"hub-self-service|" + body, hashlib.sha256).digest()


def sign(keys: list[tuple[str, bytes]], member: str, expires_ms: int, link_id: str | None = None) -> str:
    """The link token: `<kid>.<payload>.<mac>`, URL-safe."""
    if ":" not in member or not member.split(":", 1)[1]:
        raise ValueError("name the customer's record as <source>:<source_id>")
    kid, secret = keys[0]
    body = orjson.dumps({"m": member, "e": int(expires_ms), "i": link_id or secrets.token_urlsafe(9)})
    return f"{kid}.{_b64(body)}.{_b64(_mac(secret, body))}"


def verify(keys: list[tuple[str, bytes]], token: str, now_ms: int) -> Link:
    try:
        kid, body_text, mac_text = token.split(".")
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (ValueError, TypeError):
        raise LinkError("malformed link") from None
    secret = dict(keys).get(kid)
    if secret is None or not hmac.compare_digest(mac, _mac(secret, body)):
        raise LinkError("link not valid")
    try:
        payload = orjson.loads(body)
        link = Link(str(payload["m"]), int(payload["e"]), str(payload["i"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise LinkError("malformed link") from None
    if link.expires_ms <= now_ms:
        raise LinkError("link expired")
    return link


def form_token(keys: list[tuple[str, bytes]], link: Link) -> str:
    """Bound to the link: a form posted with it cannot be replayed under another link."""
    return _b64(hmac.new(keys[0][1], f"hub-self-service-form|{link.link_id}".encode(), hashlib.sha256).digest())


def preferred(values: list[dict], key: str) -> str | None:
    for value in values:
        if value.get("preferred"):
            return value[key]
    return values[0][key] if values else None


def view(golden: dict) -> dict:
    """What the page shows and the form starts from: the golden record's
    current values, each multi-valued attribute by its preferred value."""
    address = next((a for a in golden.get("addresses") or () if a.get("preferred")), None) or \
        (golden.get("addresses") or [None])[0]
    return {
        "given_name": golden.get("given_name") or "", "family_name": golden.get("family_name") or "",
        "birth_date": golden.get("birth_date") or "",
        "email": preferred(golden.get("emails") or [], "address") or "",
        "phone": preferred(golden.get("phones") or [], "number") or "",
        "line1": (address or {}).get("line1") or "", "city": (address or {}).get("city") or "",
        "postcode": (address or {}).get("postcode") or "", "country": (address or {}).get("country") or "",
    }


def consent_state(golden: dict, slots: list[tuple[str, str]]) -> dict[tuple[str, str], bool]:
    """Per (purpose, channel) slot: granted now, by the golden record's
    winning statements (a statement on channel `any` answers for every
    channel without one of its own)."""
    held: dict[tuple[str, str], bool] = {}
    for entry in golden.get("consents") or ():
        statement = entry["statement"]
        held[(statement["purpose"], statement["channel"])] = statement["status"] == "granted"
    return {(purpose, channel): held.get((purpose, channel), held.get((purpose, "any"), False))
            for purpose, channel in slots}


def customer_event(link: Link, answers: dict, now_ms: int) -> dict:
    """The self_service source's event for what the customer confirmed
    (hub.CustomerEvent). Blank answers state nothing."""
    def text(name):
        return (answers.get(name) or "").strip() or None

    address = {k: text(k) for k in ("line1", "city", "postcode", "country")}
    return {
        "source": SOURCE, "source_id": link.member, "op": "upsert", "event_time": now_ms,
        "given_name": text("given_name"), "family_name": text("family_name"), "birth_date": text("birth_date"),
        "emails": [{"address": text("email"), "verified": True}] if text("email") else [],
        "phones": [{"number": text("phone"), "verified": True}] if text("phone") else [],
        "addresses": [{**address, "verified": True}] if address["line1"] else [],
        "converted_from": link.member,  # honoured while the record is new: it joins the linked customer
    }


def consent_events(link: Link, held: dict[tuple[str, str], bool], wanted: dict[tuple[str, str], bool],
                   now_ms: int) -> list[dict]:
    """hub.ConsentEvent for each slot the customer changed."""
    source, source_id = link.member.split(":", 1)
    events = []
    for (purpose, channel), granted in sorted(wanted.items()):
        if held.get((purpose, channel), False) == granted:
            continue
        events.append({"source": source, "source_id": source_id, "statement": {
            "purpose": purpose, "channel": channel, "status": "granted" if granted else "revoked",
            "legal_basis": "consent", "effective_at": None, "expires_at": None, "collection_point": SOURCE,
            "notice_version": None, "evidence": f"self-service link {link.link_id}", "event_time": now_ms}})
    return events
