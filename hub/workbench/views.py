"""The workbench's pages: login, review queue, customers (search, golden
record, history, split and link, subject access, erasure), data quality,
users, and the customers' self-service pages and link API.

Every read of a customer and every action is audited (Workbench.audit)
before the page answers. Pages are server-rendered Jinja2 (autoescaped);
htmx swaps the review decision panel and loads a golden record's history.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from datetime import datetime, timezone
from urllib.parse import quote

import jinja2
import orjson
from aiohttp import web

from hub import history as golden_history
from hub import lookup, quality_tally, review, self_service, subject_access
from hub.access import bearer
from hub.csv_out import write_rows
from hub.ingest_api import source_token_ok
from hub.matching.features import fold, hash_key, phonetic
from hub.schemas import AUDIT, CONSENT_EVENT, ERASURE_REQUEST, codec
from hub.topic_seal import TopicValues
from hub.validation import id_problem
from hub.workbench import auth
from hub.workbench.app import HERE, LOGIN_COOKIE, SESSION_COOKIE, AuditUnavailable, Workbench, json_response, now_ms

SEARCH_KINDS = ("auto", "name", "email", "phone", "loyalty_id", "source", "golden_id")
MAX_RESULTS = 20
REPORT_DAYS = (7, 30, 90)


def _time(ms) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _age(ms) -> str:
    if ms is None:
        return "-"
    seconds = max(0, (now_ms() - ms) / 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _percent(value) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_env.filters.update(time=_time, age=_age, percent=_percent,
                    json=lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


def wb_of(request) -> Workbench:
    return request.app["workbench"]


def render(request, template: str, status: int = 200, **context) -> web.Response:
    session = request.get("session")
    body = _env.get_template(template).render(
        session=session, may=lambda action: session is not None and auth.may(session.role, action),
        static=lambda path: request.app.router["static"].url_for(filename=path), path=request.path,
        **context)
    return web.Response(text=body, content_type="text/html", status=status)


def require(action: str):
    """The page needs a session whose role may `action`; otherwise the login page, or 403."""
    def wrap(handler):
        async def guarded(request):
            session = request.get("session")
            if session is None:
                if request.method == "GET":
                    raise web.HTTPFound("/login?next=" + quote(request.path_qs, safe=""))
                raise web.HTTPUnauthorized(text="Your session has ended: log in again.")
            if not auth.may(session.role, action):
                return render(request, "message.html", status=403, title="Not allowed",
                              message=f"Your role ({session.role}) may not do this.")
            try:
                return await handler(request, session)
            except AuditUnavailable:
                return render(request, "message.html", status=503, title="Audit trail unavailable",
                              message="The broker did not acknowledge the audit record: nothing was shown or done. "
                                      "Try again in a moment.")
        guarded.__name__ = handler.__name__
        return guarded
    return wrap


def _safe_next(value: str | None) -> str:
    return value if value and value.startswith("/") and not value.startswith("//") else "/queue"


# ---------------------------------------------------------------- login

async def login_page(request):
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "login.html", login_csrf=token, next=_safe_next(request.query.get("next")),
                      error=None)
    _login_cookie(request, response, token)
    return response


def _login_cookie(request, response, token: str) -> None:
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                        secure=wb_of(request).settings.workbench.secure_cookies, max_age=3600)


async def login(request):
    wb = wb_of(request)
    form = await request.post()
    token = request.cookies.get(LOGIN_COOKIE)
    if not token or not auth.csrf_ok(token, form.get("csrf_token")):
        raise web.HTTPForbidden(text="This form has expired: reload the login page.")
    name, password = str(form.get("user", "")), str(form.get("password", ""))
    address = request.remote or ""
    user, why = await asyncio.get_running_loop().run_in_executor(None, wb.accounts.authenticate, name, password,
                                                                 address)
    if user is None:
        await wb.audit(name[:64] or "-", "-", "login_failed", detail=why)
        message = ("Too many failed attempts: wait a few minutes and try again." if why == "throttled"
                   else "Wrong user name or password." if why == "invalid" else "This account is disabled.")
        response = render(request, "login.html", status=429 if why == "throttled" else 401, login_csrf=token,
                          next=_safe_next(form.get("next")), error=message)
        return response
    await wb.audit(user["name"], user["role"], "login")
    response = web.HTTPFound(_safe_next(form.get("next")))
    response.set_cookie(SESSION_COOKIE, wb.accounts.open_session(user), httponly=True, samesite="Strict",
                        secure=wb.settings.workbench.secure_cookies, path="/")
    response.del_cookie(LOGIN_COOKIE, path="/login")
    raise response


async def logout(request):
    session = request.get("session")
    wb = wb_of(request)
    wb.accounts.close_session(request.cookies.get(SESSION_COOKIE))
    if session:
        await wb.audit(session.user, session.role, "logout")
    response = web.HTTPFound("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def home(request):
    raise web.HTTPFound("/queue")


async def health(request):
    try:
        await wb_of(request).store.ping()
    except Exception as exc:
        return json_response({"status": "degraded", "redis": type(exc).__name__}, status=503)
    feed = request.app.get("feed")
    if feed is not None and not feed.is_alive():
        return json_response({"status": "degraded", "review_feed": "stopped"}, status=503)
    return json_response({"status": "ok"})


async def prometheus_metrics(request):
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from hub import metrics

    return web.Response(body=generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])


# ---------------------------------------------------------------- review queue

def _float(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


@require("read")
async def queue(request, session):
    wb = wb_of(request)
    query = request.query
    state = query.get("state") if query.get("state") in review.STATES else review.OPEN
    filters = {"source": query.get("source") or None, "min_score": _float(query.get("min_score")),
               "max_score": _float(query.get("max_score"))}
    hours = _float(query.get("older_than_h"))
    items = wb.reviews.list(state, limit=100, now_ms=now_ms(),
                            older_than_ms=int(hours * 3_600_000) if hours else None, **filters)
    await wb.audit(session.user, session.role, "queue_viewed", detail=f"{state}: {len(items)} items")
    return render(request, "queue.html", items=items, state=state, stats=wb.reviews.stats(now_ms()),
                  sources=[s.name for s in wb.pipeline.sources], query=query)


async def _golden_of_member(wb: Workbench, members: list[str]) -> dict[str, dict | None]:
    """Each record's current golden record (None: not in the index any more)."""
    entries = await wb.store.members(members)
    golden: dict[str, dict | None] = {}
    for gid in sorted({e.golden_id for e in entries.values()}):
        found = wb.store.lookup(golden_id=gid)
        golden[gid] = found[0] if found else None
    return {m: (golden.get(entries[m].golden_id) if m in entries else None) for m in members}


async def _contributions(wb: Workbench, golden_ids: list[str]) -> dict[str, dict]:
    states = await wb.store.load(sorted(set(golden_ids)))
    return {member: c for state in states.values() for member, c in state.contributions.items()}


async def _item_context(wb: Workbench, item: dict) -> dict:
    members = [item["member"], *review.candidate_members(item)]
    golden = await _golden_of_member(wb, members)
    records = await _contributions(wb, [g["golden_id"] for g in golden.values() if g])
    return {"item": item, "golden": golden, "records": records,
            "attributes": ("given_name", "middle_name", "family_name", "birth_date", "gender", "emails", "phones",
                           "addresses", "loyalty_id", "national_id", "organisation_name")}


@require("read")
async def queue_item(request, session):
    wb = wb_of(request)
    item = wb.reviews.get(request.match_info["item"])
    if item is None:
        raise web.HTTPNotFound(text="No such review item")
    context = await _item_context(wb, item)
    shown = sorted({g["golden_id"] for g in context["golden"].values() if g})
    await wb.audit(session.user, session.role, "review_viewed", golden_id=shown[0] if shown else None,
                   subject=item["id"], detail="golden records shown: " + ", ".join(shown))
    return render(request, "queue_item.html", **context)


_OPERATIONS = {"claim", "unclaim", "link", "apart", "undo"}


@require("decide")
async def queue_decide(request, session):
    wb = wb_of(request)
    item_id, operation = request.match_info["item"], request.match_info["operation"]
    if operation not in _OPERATIONS:
        raise web.HTTPNotFound()
    form = await request.post()
    now = now_ms()
    item = wb.reviews.get(item_id)
    if item is None:
        raise web.HTTPNotFound(text="No such review item")
    error = None
    try:
        if operation == "claim":
            change = lambda held: (review.claim(held, session.user, now), [])  # noqa: E731
        elif operation == "unclaim":
            change = lambda held: (review.unclaim(held, session.user, now, session.role == "admin"), [])  # noqa: E731
        elif operation == "undo":
            change = lambda held: review.undo(held, session.user, now)  # noqa: E731
        else:
            others = form.getall("others", []) or review.candidate_members(item)[:1]
            resolution = review.LINK if operation == "link" else review.APART
            change = lambda held: review.resolve(held, session.user, resolution, list(others), now)  # noqa: E731
        # the transition is checked first; its actions are sent and audited; then the queue records it
        _, actions = change(item)
        messages = [wb.steward_action(a.kind, a.member, list(a.others), session.user,
                                      f"review {item_id}: {operation}") for a in actions]
        await wb.audit(session.user, session.role, f"review_{operation}", golden_id=item["golden_id"],
                       subject=item_id, detail=", ".join(f"{a.kind} {a.member} / {', '.join(a.others)}"
                                                         for a in actions) or None, also=messages)
        item, _ = wb.reviews.update(item_id, change)
    except review.ReviewError as exc:
        error = str(exc)
        item = wb.reviews.get(item_id)
    context = await _item_context(wb, item)
    if request.headers.get("HX-Request"):
        return render(request, "_decision.html", error=error, **context)
    if error:
        return render(request, "queue_item.html", status=409, error=error, **context)
    raise web.HTTPSeeOther(f"/queue/{item_id}")


# ---------------------------------------------------------------- customers

def _guess_kind(text: str) -> str:
    if "@" in text:
        return "email"
    if text.startswith("G") and len(text) == 21 and all(c in "0123456789abcdef" for c in text[1:]):
        return "golden_id"
    if ":" in text:
        return "source"
    if sum(c.isdigit() for c in text) >= 7 and all(c.isdigit() or c in "+ ()-." for c in text):
        return "phone"
    if any(c.isdigit() for c in text) and " " not in text:
        return "loyalty_id"
    return "name"


async def _search(wb: Workbench, kind: str, text: str) -> tuple[list[dict], str | None]:
    region = wb.pipeline.sources[0].default_region
    if kind == "golden_id":
        return wb.store.lookup(golden_id=text), None
    if kind == "name":
        words = text.split()
        if len(words) < 2:
            return [], "give a given name and a family name"
        given, family = fold(words[0]), fold(words[-1])
        first, second = sorted((phonetic(given) or "", phonetic(family) or ""))
        blocks = await wb.store.blocks([hash_key(wb.secret, f"g:p:{first}:{second}")], 200)
        found_members = next(iter(blocks.values())).members
        if found_members is None:
            return [], "too many customers sound like this name: search by e-mail, phone or loyalty id"
        entries = await wb.store.members(found_members)
        results = []
        for gid in sorted({e.golden_id for e in entries.values()})[:MAX_RESULTS * 2]:
            results += wb.store.lookup(golden_id=gid)
        exact = lambda g: (fold(g.get("given_name")), fold(g.get("family_name"))) != (given, family)  # noqa: E731
        unique = {g["golden_id"]: g for g in results}
        return sorted(unique.values(), key=lambda g: (exact(g), g["golden_id"]))[:MAX_RESULTS], None
    value = lookup.query_value(kind, text, region)
    if value is None:
        return [], f"not a valid {kind.replace('_', ' ')}"
    return wb.store.lookup(index_key=hash_key(wb.secret, value), limit=MAX_RESULTS), None


@require("read")
async def customers(request, session):
    wb = wb_of(request)
    text = (request.query.get("q") or "").strip()
    kind = request.query.get("kind") if request.query.get("kind") in SEARCH_KINDS else "auto"
    results, problem = [], None
    if text:
        used = _guess_kind(text) if kind == "auto" else kind
        results, problem = await _search(wb, used, text[:256])
        await wb.audit(session.user, session.role, "searched", detail=f"by {used}: found "
                       + (", ".join(g["golden_id"] for g in results) or "none"))
    return render(request, "customers.html", q=text, kind=kind, kinds=SEARCH_KINDS, results=results,
                  problem=problem)


async def _customer(wb: Workbench, golden_id: str) -> dict | None:
    found = wb.store.lookup(golden_id=golden_id)
    if not found:
        return None
    golden = found[0]
    gid, members = golden["golden_id"], golden["members"]
    contributions = await _contributions(wb, [gid])
    consents = await wb.store.get(members)
    surveys = await wb.store.get_surveys(members)
    sent = (await wb.store.load_syndication([gid])).get(gid, {})
    return {"golden": golden, "contributions": contributions, "consents": consents, "surveys": surveys,
            "reviews": wb.reviews.for_members(members),
            "targets": subject_access.targets_view(golden, wb.pipeline, sent, now_ms())}


@require("read")
async def customer(request, session):
    wb = wb_of(request)
    asked = request.match_info["golden_id"]
    data = await _customer(wb, asked)
    if data is None:
        await wb.audit(session.user, session.role, "golden_viewed", golden_id=asked, detail="not found")
        return render(request, "message.html", status=404, title="Not found",
                      message=f"No golden record {asked}: erased, or never held.")
    gid = data["golden"]["golden_id"]
    if gid != asked:
        raise web.HTTPFound(f"/customers/{gid}")  # merged away: its survivor
    await wb.audit(session.user, session.role, "golden_viewed", golden_id=gid)
    return render(request, "golden.html", **data, message=request.query.get("done"))


def _read_topic_keys(wb: Workbench, topic: str, keys: set[bytes]) -> list[bytes]:
    return [value for _, value in _read_topic_records(wb, topic, keys)]


def _read_topic_records(wb: Workbench, topic: str, keys: set[bytes]) -> list[tuple[bytes, bytes]]:
    from hub.connectors.kafka import read_topic

    return [(key, value) for key, value in read_topic(wb.bootstrap, topic, keys, timeout_s=30) if value]


def _audit_events(wb: Workbench, keys: set[bytes]) -> list[dict]:
    """The audit events under these keys, opened with the workers' keyring (hub.topic_seal)."""
    audit = TopicValues(AUDIT, wb.pipeline.topics.audit, None, wb.store.keyring)
    return [audit.decode(value, key) for key, value in _read_topic_records(wb, wb.pipeline.topics.audit, keys)]


@require("read")
async def customer_history(request, session):
    wb = wb_of(request)
    gid = request.match_info["golden_id"]
    golden = wb.store.lookup(golden_id=gid)
    members = golden[0]["members"] if golden else []
    keys = {gid.encode(), golden_history.erased_id(gid).encode(), *(m.encode() for m in members)}
    loop = asyncio.get_running_loop()
    audit_values, access_values = await asyncio.gather(
        loop.run_in_executor(None, _audit_events, wb, keys),
        loop.run_in_executor(None, _read_topic_keys, wb, wb.pipeline.topics.access_audit, {gid.encode()}))
    events = golden_history.ordered(audit_values, gid)
    access = sorted((wb.access_codec.decode(v) for v in access_values), key=lambda e: e["at"], reverse=True)
    await wb.audit(session.user, session.role, "history_viewed", golden_id=gid)
    return render(request, "_history.html", events=events, access=access[:50])


async def _member_action(request, session, kind: str):
    wb = wb_of(request)
    gid = request.match_info["golden_id"]
    form = await request.post()
    member = str(form.get("member", "")).strip()
    golden = wb.store.lookup(golden_id=gid)
    if not golden or member not in golden[0]["members"]:
        return render(request, "message.html", status=400, title="Not a member",
                      message=f"{member or 'That record'} is not a member of {gid}.")
    if kind == "split":
        others = [m for m in golden[0]["members"] if m != member]
        if not others:
            return render(request, "message.html", status=400, title="Nothing to split",
                          message=f"{member} is alone in {gid}.")
    else:
        other = str(form.get("other", "")).strip()
        if ":" not in other or other == member:
            return render(request, "message.html", status=400, title="Which record?",
                          message="Name the record to link as <source>:<source_id>.")
        if not await wb.store.members([other]):
            return render(request, "message.html", status=400, title="Unknown record",
                          message=f"{other} is not in the identity index.")
        others = [other]
    reason = str(form.get("reason", ""))[:500] or None
    action = wb.steward_action(kind, member, others, session.user, reason)
    await wb.audit(session.user, session.role, kind, golden_id=gid, subject=member,
                   detail=", ".join(others), also=[action])
    raise web.HTTPSeeOther(f"/customers/{gid}?done=" + quote(f"{kind} of {member} sent to the workers"))


@require("decide")
async def customer_split(request, session):
    return await _member_action(request, session, "split")


@require("decide")
async def customer_link(request, session):
    return await _member_action(request, session, "link")


@require("subject_access")
async def customer_export(request, session):
    wb = wb_of(request)
    gid = request.match_info["golden_id"]
    data = await _customer(wb, gid)
    if data is None:
        return render(request, "message.html", status=404, title="Not found", message=f"No golden record {gid}.")
    gid = data["golden"]["golden_id"]
    members = data["golden"]["members"]
    keys = {gid.encode(), golden_history.erased_id(gid).encode(), *(m.encode() for m in members)}
    events = await asyncio.get_running_loop().run_in_executor(None, _audit_events, wb, keys)
    document = subject_access.export(data["golden"], data["contributions"], data["consents"], data["surveys"],
                                     events, data["reviews"], data["targets"],
                                     now_ms(), session.user)
    await wb.audit(session.user, session.role, "subject_access_exported", golden_id=gid,
                   detail=f"{len(members)} records, {len(document['history'])} history events")
    return web.Response(body=orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS),
                        content_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="subject-access-{gid}.json"'})


@require("erase")
async def customer_erase(request, session):
    wb = wb_of(request)
    gid = request.match_info["golden_id"]
    form = await request.post()
    if str(form.get("confirm", "")).strip() != gid:
        return render(request, "message.html", status=400, title="Not erased",
                      message="Type the golden id to confirm the erasure.")
    request_value = codec(ERASURE_REQUEST).encode({"source": None, "source_id": None, "golden_id": gid,
                                                   "requester": f"workbench:{session.user}",
                                                   "requested_at": now_ms()})
    await wb.audit(session.user, session.role, "erasure_requested", golden_id=gid,
                   detail=str(form.get("reason", ""))[:500] or None,
                   also=[(wb.pipeline.topics.erasure, gid.encode(), request_value)])
    return render(request, "message.html", title="Erasure requested",
                  message=f"The erasure of {gid} is on its way to the workers: every member record, consent and "
                          f"survey answer is removed, and every target gets a tombstone.")


# ---------------------------------------------------------------- data quality

def _quality(wb: Workbench, days: int) -> dict:
    now = now_ms()
    day_names = quality_tally.days_back(now, days)
    counts = wb.tallies.read(day_names)
    report = quality_tally.report(counts)
    sizes = wb.store.golden_sizes(2000)
    spread = {"1": 0, "2": 0, "3": 0, "4+": 0}
    for n in sizes:
        spread["4+" if n >= 4 else str(max(n, 1))] += 1
    duplicates = {"sampled": len(sizes), "records_per_golden": round(sum(sizes) / len(sizes), 3) if sizes else None,
                  "spread": spread}
    sources = sorted(report["sources"])
    charts = {
        "completeness": {"labels": list(quality_tally.ATTRIBUTES), "series": {
            s: [round((report["sources"][s]["attributes"][a]["completeness"] or 0) * 100, 1)
                for a in quality_tally.ATTRIBUTES] for s in sources}},
        "trend": {"labels": day_names, "series": {
            s: [report["days"].get(d, {}).get(s, {}).get("records", 0) for d in day_names] for s in sources},
            "dead_letters": [sum(v.get("dead_letters", 0) for v in report["days"].get(d, {}).values())
                             for d in day_names]},
        "dlq": {"labels": sorted({r for s in sources for r in report["sources"][s]["dlq_by_reason"]}), "series": {
            s: [report["sources"][s]["dlq_by_reason"].get(r, 0)
                for r in sorted({r for x in sources for r in report["sources"][x]["dlq_by_reason"]})]
            for s in sources}},
        "duplicates": {"labels": list(spread), "series": {"golden records": list(spread.values())}},
    }
    return {"report": report, "duplicates": duplicates, "queue": wb.reviews.stats(now), "charts": charts,
            "days": days, "day_names": day_names, "attributes": quality_tally.ATTRIBUTES, "counts": counts}


def _days(request) -> int:
    try:
        days = int(request.query.get("days", 30))
    except ValueError:
        days = 30
    return days if days in REPORT_DAYS else 30


@require("read")
async def quality(request, session):
    wb = wb_of(request)
    data = _quality(wb, _days(request))
    await wb.audit(session.user, session.role, "quality_viewed")
    charts = orjson.dumps(data["charts"]).decode().replace("<", "\\u003c")  # inside <script>: no "</script>"
    return render(request, "quality.html", choices=REPORT_DAYS, charts_json=charts, **data)


@require("read")
async def quality_csv(request, session):
    wb = wb_of(request)
    data = _quality(wb, _days(request))
    rows = []
    for day in data["day_names"]:
        fields = data["counts"].get(day, {})
        for source, summary in sorted(data["report"]["days"].get(day, {}).items()):
            for attr in data["attributes"]:
                numbers = summary["attributes"][attr]
                rows.append([day, source, attr, summary["records"], fields.get(f"{source}|{attr}|present", 0),
                             fields.get(f"{source}|{attr}|values", 0), numbers["dropped"],
                             numbers["completeness"], numbers["validity"], "", ""])
            for reason, n in summary["dlq_by_reason"].items():
                rows.append([day, source, "", summary["records"], "", "", "", "", "", reason, n])
    out = io.StringIO()
    write_rows(out, ["day", "source", "attribute", "records", "present", "values", "dropped", "completeness",
                     "validity", "dead_letter_reason", "dead_letters"], rows)  # formulas neutralised (hub.csv_out)
    await wb.audit(session.user, session.role, "quality_downloaded")
    return web.Response(text=out.getvalue(), content_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="hub-data-quality-{data["day_names"][-1]}.csv"'})


# ---------------------------------------------------------------- users

@require("admin")
async def users(request, session):
    return render(request, "users.html", users=wb_of(request).accounts.users(), roles=auth.ROLES, error=None,
                  token=None)


@require("admin")
async def users_change(request, session):
    wb = wb_of(request)
    form = await request.post()
    operation, name = str(form.get("operation", "")), str(form.get("user", ""))
    error = token = None
    try:
        if operation == "add":
            name = wb.accounts.add_user(name, str(form.get("role", "")), str(form.get("password", "")))
        elif operation == "role":
            wb.accounts.set_role(name, str(form.get("role", "")))
        elif operation in ("disable", "enable"):
            wb.accounts.set_disabled(name, operation == "disable")
        elif operation == "password":
            wb.accounts.set_password(name, str(form.get("password", "")))
        elif operation == "token":
            token = wb.accounts.new_token(name)
        else:
            raise ValueError("unknown operation")
        await wb.audit(session.user, session.role, f"user_{operation}", subject=name)
    except ValueError as exc:
        error = str(exc)
    return render(request, "users.html", status=400 if error else 200, users=wb.accounts.users(),
                  roles=auth.ROLES, error=error, token=token)


# ---------------------------------------------------------------- self-service

def _consent_slots(wb: Workbench, golden: dict) -> list[tuple[str, str]]:
    """The (purpose, channel) choices a customer is offered: every purpose that
    needs consent, on the channels targets use it on (else any channel)."""
    slots = []
    held = {(c["statement"]["purpose"], c["statement"]["channel"]) for c in golden.get("consents") or ()}
    for purpose in wb.pipeline.purposes:
        if purpose.granted_by_default:
            continue
        channels = {c for t in wb.pipeline.targets if purpose.name in t.purposes for c in t.channels}
        channels |= {c for p, c in held if p == purpose.name and c != "any"}
        slots += [(purpose.name, c) for c in sorted(channels or {"any"})]
    return slots


async def _linked_customer(request) -> tuple[self_service.Link, dict] | web.Response:
    wb = wb_of(request)
    try:
        link = self_service.verify(wb.link_keys, request.match_info["token"], now_ms())
    except self_service.LinkError as exc:
        return render(request, "self_service_closed.html", status=403 if "expired" not in str(exc) else 410,
                      reason=str(exc))
    entries = await wb.store.members([link.member])
    found = wb.store.lookup(golden_id=entries[link.member].golden_id) if link.member in entries else []
    if not found:
        return render(request, "self_service_closed.html", status=404, reason="we hold no data under this link")
    return link, found[0]


async def self_service_page(request):
    wb = wb_of(request)
    opened = await _linked_customer(request)
    if isinstance(opened, web.Response):
        return opened
    link, golden = opened
    slots = _consent_slots(wb, golden)
    await wb.audit(f"self_service:{link.link_id}", "customer", "self_service_viewed", golden_id=golden["golden_id"],
                   subject=link.member)
    return render(request, "self_service.html", golden=golden, values=self_service.view(golden), slots=slots,
                  consent=self_service.consent_state(golden, slots), expires=link.expires_ms,
                  form_token=self_service.form_token(wb.link_keys, link), done=False)


async def self_service_submit(request):
    wb = wb_of(request)
    opened = await _linked_customer(request)
    if isinstance(opened, web.Response):
        return opened
    link, golden = opened
    form = await request.post()
    if not auth.csrf_ok(self_service.form_token(wb.link_keys, link), form.get("form_token")):
        raise web.HTTPForbidden(text="This form has expired: open your link again.")
    now = now_ms()
    slots = _consent_slots(wb, golden)
    held = self_service.consent_state(golden, slots)
    wanted = {slot: form.get(f"consent:{slot[0]}:{slot[1]}") == "yes" for slot in slots}
    answers = {k: str(form.get(k, ""))[:256] for k in self_service.view(golden)}
    event = self_service.customer_event(link, answers, now)
    consents = self_service.consent_events(link, held, wanted, now)
    member = f"{self_service.SOURCE}:{link.member}"
    source = wb.pipeline.source(self_service.SOURCE)
    if source is None:
        return render(request, "self_service_closed.html", status=503,
                      reason="self-service is not configured on this hub (no self_service source)")
    messages = [(source.raw_topic, member.encode(), orjson.dumps(event))]
    messages += [(wb.pipeline.topics.consent, link.member.encode(), codec(CONSENT_EVENT).encode(c)) for c in consents]
    before = self_service.view(golden)
    changed = sorted(k for k, v in answers.items() if v.strip() != before[k])
    await wb.audit(f"self_service:{link.link_id}", "customer", "self_service_submitted",
                   golden_id=golden["golden_id"], subject=link.member,
                   detail=f"changed: {', '.join(changed) or 'nothing'}; consent: "
                          + (", ".join(f"{c['statement']['purpose']}/{c['statement']['channel']} "
                                       f"{c['statement']['status']}" for c in consents) or "unchanged"),
                   also=messages)
    return render(request, "self_service.html", golden=golden, values={**before, **answers}, slots=slots,
                  consent=wanted, expires=link.expires_ms, form_token=self_service.form_token(wb.link_keys, link),
                  done=True)


def mint_link(wb: Workbench, member: str, ttl_s: int | None = None) -> tuple[str, int]:
    expires = now_ms() + 1000 * (ttl_s or wb.settings.workbench.link_ttl_s)
    return f"{wb.public_url}/s/{self_service.sign(wb.link_keys, member, expires)}", expires


async def api_mint_link(request):
    """POST {"source": ..., "source_id": ..., "ttl_s": ...} with a token of that source: a link for its customer."""
    wb = wb_of(request)
    try:
        body = await request.json(loads=orjson.loads)
        source_name, source_id = str(body["source"]), str(body["source_id"]).strip()
        ttl_s = int(body.get("ttl_s") or wb.settings.workbench.link_ttl_s)
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return json_response({"error": "bad_request", "detail": "JSON with source, source_id and optionally ttl_s"},
                             status=400)
    source = wb.pipeline.source(source_name)
    if source is None or not source_token_ok(source, bearer(request.headers.get("Authorization"))):
        return json_response({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
    if not source_id or id_problem("source_id", source_id) or not 60 <= ttl_s <= 90 * 86_400:
        return json_response({"error": "bad_request", "detail": "a source_id (printable, without '{', '}' or "
                                                                "'|'), and ttl_s from 60 s to 90 days"}, status=400)
    member = f"{source_name}:{source_id}"
    url, expires = mint_link(wb, member, ttl_s)
    await wb.audit(f"source:{source_name}", "source", "self_service_link_minted", subject=member)
    return json_response({"url": url, "expires_at": expires}, status=201)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/", home)
    r.add_get("/health", health)
    r.add_get("/metrics", prometheus_metrics)
    r.add_get("/login", login_page)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/queue", queue)
    r.add_get("/queue/{item}", queue_item)
    r.add_post("/queue/{item}/{operation}", queue_decide)
    r.add_get("/customers", customers)
    r.add_get("/customers/{golden_id}", customer)
    r.add_get("/customers/{golden_id}/history", customer_history)
    r.add_post("/customers/{golden_id}/split", customer_split)
    r.add_post("/customers/{golden_id}/link", customer_link)
    r.add_post("/customers/{golden_id}/export", customer_export)
    r.add_post("/customers/{golden_id}/erase", customer_erase)
    r.add_get("/quality", quality)
    r.add_get("/quality.csv", quality_csv)
    r.add_get("/users", users)
    r.add_post("/users", users_change)
    r.add_get("/s/{token}", self_service_page)
    r.add_post("/s/{token}", self_service_submit)
    r.add_post("/api/self-service-links", api_mint_link)
