"""The steward workbench and the customers' self-service pages, driven in a
real browser (Debian's Chromium, headless, through playwright) against a
running worker on the embedded broker and Redis, and a `hub workbench`
process beside it. Screenshots of the queue, a golden record and the
quality report go to docs/images/ (the documentation shows them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml

from hub.access import new_token
from hub.config import DEFAULT_CONFIG, load_pipeline
from hub.connectors.embedded import free_port, stop_process
from hub.demo import encode_event
from hub.schemas import ACCESS_EVENT, AUDIT, CONSENT_EVENT, CUSTOMER_EVENT, codec
from hub.store.redis import RedisStore
from hub.store.redis.keys import apart_key, pin_key
from hub.testing.generator import generate
from hub.testing.harness import Feeder, LocalHub, Watcher, open_goldens, wait_caught_up, worker_input_topics

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("HUB_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
PASSWORD = "correct horse battery"
T0 = int(time.time() * 1000) - 120_000


def browser_or_fail():
    """Chromium and playwright, or a loud failure in CI (.ci/run installs both); a skip elsewhere."""
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[test]')"
    if problem:
        if os.environ.get("CI") or os.environ.get("HUB_REQUIRE_BROWSER"):
            pytest.fail(f"browser tests must run in CI: {problem}")
        pytest.skip(problem)


def event(source, sid, given, family, email=None, phone=None, at=T0, **more):
    return (f"raw.{source}", f"{source}:{sid}".encode(), codec(CUSTOMER_EVENT).encode({
        "source": source, "source_id": sid, "event_time": at, "given_name": given, "family_name": family,
        "emails": [{"address": email}] if email else [], "phones": [{"number": phone}] if phone else [], **more}))


def consent(source, sid, purpose, status, channel="email", at=T0 + 1000):
    return ("consent.events", f"{source}:{sid}".encode(), codec(CONSENT_EVENT).encode({
        "source": source, "source_id": sid, "statement": {
            "purpose": purpose, "channel": channel, "status": status, "legal_basis": "consent",
            "effective_at": None, "expires_at": None, "collection_point": "web", "notice_version": "v1",
            "evidence": None, "event_time": at}}))


# the same name and nothing else shared: names alone never merge, so the matcher asks a steward
DOUBTFUL = [event("crm", "R1", "Margaret", "Holloway", email="m.holloway@gmail.com"),
            event("pos", "R2", "Margaret", "Holloway", phone="07911 123457", at=T0 + 1)]
SAM = [event("crm", "S1", "Sam", "Carter", email="sam.carter@gmail.com", phone="07911 222333",
             addresses=[{"line1": "4 Park Row", "city": "Leeds", "postcode": "LS1 5HD", "country": "GB"}]),
       consent("crm", "S1", "marketing", "granted")]
NINA = [event("crm", "N1", "Nina", "Okafor", email="nina.okafor@gmail.com", phone="07911 444555")]


def golden_values(view) -> dict[str, dict]:
    return open_goldens(os.environ["HUB_PII_KEY"], view.live("customer.golden"))  # the workers' key (conftest)


def golden_of(view, member: str) -> dict | None:
    return next((g for g in golden_values(view).values() if member in g["members"]), None)


def hub_cli(env, *args, stdin: str | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "hub", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    browser_or_fail()
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("workbench")
    pipeline = load_pipeline(None)
    crm_token, crm_digest = new_token()
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for source in config["sources"]:
        if source["name"] == "crm":
            source["tokens_sha256"] = [crm_digest]
    config_file = tmp / "hub.yaml"
    config_file.write_text(yaml.safe_dump(config))
    hub = LocalHub(pipeline, tmp).start()
    workbench = None
    playwright = None
    try:
        hub.worker()
        port = free_port()
        env = {**os.environ, "HUB_KAFKA__BOOTSTRAP_SERVERS": hub.bootstrap, "HUB_REDIS__URL": hub.redis_url,
               "HUB_KAFKA__SESSION_TIMEOUT_S": "2", "HUB_CONFIG_FILE": str(config_file),
               "HUB_WORKBENCH__PORT": str(port), "HUB_WORKBENCH__LINK_KEYS": "k1:" + "s" * 40}
        for name, role in (("stella", "steward"), ("victor", "viewer"), ("ada", "admin")):
            hub_cli(env, "user", "add", name, "--role", role, "--password-stdin", stdin=PASSWORD + "\n")
        log = open(tmp / "workbench.log", "ab")
        workbench = subprocess.Popen([sys.executable, "-m", "hub", "workbench"], env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert workbench.poll() is None, (tmp / "workbench.log").read_text()
            try:
                if http("GET", base + "/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise TimeoutError("the workbench did not answer /health")
        feeder = Feeder(hub.bootstrap)
        # a realistic background: generated customers from four sources, duplicates and bad input included
        background = generate(60, seed=11, start_ms=T0 - 20 * 86_400_000)
        for e in background:
            feeder.send(e.topic, e.key, e.raw if e.raw is not None else encode_event(e.topic, e.value))
        for message in DOUBTFUL + SAM + NINA:
            feeder.send(*message)
        feeder.flush()
        watcher = Watcher(hub.bootstrap, pipeline.all_topics())
        wait_caught_up(hub.bootstrap, "hub", worker_input_topics(pipeline), 90)  # everything fed is handled
        watcher.wait_until(lambda v: golden_of(v, "crm:S1") is not None
                           and golden_of(v, "crm:S1")["golden_id"] in v.live("mastered.marketing"), timeout_s=90)
        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield {"hub": hub, "base": base, "env": env, "watcher": watcher, "feeder": feeder, "browser": browser,
               "crm_token": crm_token, "pipeline": pipeline, "log": tmp / "workbench.log"}
        browser.close()
        watcher.close()
    finally:
        if playwright is not None:
            playwright.stop()
        stop_process(workbench, grace_s=15)
        hub.stop()


def login(setup, user: str):
    page = setup["browser"].new_page(viewport={"width": 1360, "height": 900})
    page.goto(setup["base"] + "/queue")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/queue$"))
    return page


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise TimeoutError(f"{what} not met within {timeout_s} s")


def screenshot(page, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / name), full_page=True)


def access_events(setup) -> list[dict]:
    from hub.connectors.kafka import read_topic

    return [codec(ACCESS_EVENT).decode(v) for _, v in read_topic(setup["hub"].bootstrap, "audit.access") if v]


def test_a_doubtful_pair_is_linked_in_the_browser_and_the_merged_record_reaches_the_targets(setup):
    watcher = setup["watcher"]
    page = login(setup, "stella")
    # the review feed fills the queue from steward.review
    # the review feed fills the queue from steward.review (either record may be the one decided second)
    row = page.locator("#queue tr", has_text="crm:R1").filter(has_text="pos:R2")
    wait_for(lambda: page.reload() or row.count(), what="the item in the queue")
    screenshot(page, "workbench-queue.png")
    row.locator("a").click()
    page.wait_for_selector("#decision")
    assert "Holloway" in page.inner_text("table.side")
    assert "given_name" in page.inner_text("table.evidence")  # the evidence, level by level
    screenshot(page, "workbench-review.png")
    page.click("#claim")
    page.wait_for_selector("#decision .state-claimed")
    page.click("#link")
    page.wait_for_selector("#decision .state-resolved")
    assert re.search(r"linked with (crm:R1|pos:R2) by stella", page.inner_text("#decision"))

    view = watcher.wait_until(lambda v: (g := golden_of(v, "pos:R2")) is not None and "crm:R1" in g["members"])
    merged = golden_of(view, "pos:R2")
    pos = orjson.loads(view.live("mastered.pos")[merged["golden_id"]])
    assert [e["address"] for e in pos["emails"]] == ["m.holloway@gmail.com"]
    assert [p["number"] for p in pos["phones"]] == ["+447911123457"]
    # the other golden record is gone from the target: one customer, one record
    assert sum(1 for v in view.live("mastered.pos").values() if b"Holloway" in v) == 1
    audit = [codec(AUDIT).decode(v) for v in view.latest["audit"].values() if v]
    assert any(a["kind"] == "steward_action" and a["cause"].startswith("steward link by stella") for a in audit)

    # the golden record view: lineage, members, history; then undo from the queue splits them again
    page.goto(f"{setup['base']}/customers/{merged['golden_id']}")
    page.wait_for_selector("#history ol.history")
    assert page.locator("#members tr", has_text="crm:R1").count() == 1
    assert "golden merged" in page.inner_text("#history") or "steward" in page.inner_text("#history")
    screenshot(page, "workbench-golden.png")
    events = access_events(setup)
    assert any(e["actor"] == "stella" and e["action"] == "golden_viewed" and e["golden_id"] == merged["golden_id"]
               for e in events)
    assert any(e["actor"] == "stella" and e["action"] == "review_link" for e in events)

    item_url = next(f"{setup['base']}/queue/{e['subject']}" for e in events if e["action"] == "review_link")
    page.goto(item_url)
    page.click("#undo")
    page.wait_for_selector("#decision .state-open")
    view = watcher.wait_until(lambda v: (g := golden_of(v, "pos:R2")) is not None and g["members"] == ["pos:R2"])
    assert golden_of(view, "crm:R1")["members"] == ["crm:R1"]
    # and no steward constraint is left between them: as before the decision
    client = RedisStore.from_url(setup["hub"].redis_url).client  # (playwright holds this thread's event loop)
    held = lambda: sum(client.scard(key(m)) for key in (apart_key, pin_key) for m in ("pos:R2", "crm:R1"))  # noqa: E731
    wait_for(lambda: held() == 0, what="the constraints lifted")
    page.close()


def test_a_viewer_sees_but_cannot_decide(setup):
    page = login(setup, "victor")
    page.locator("#queue tr", has_text="crm:R1").filter(has_text="pos:R2").locator("a").click()
    page.wait_for_selector("#decision")
    assert page.locator("#link").count() == 0 and page.locator("#apart").count() == 0
    assert "may look but not decide" in page.inner_text("#decision")
    item = page.url.rsplit("/", 1)[1]
    token = page.get_attribute("body", "hx-headers")
    answer = page.request.post(f"{setup['base']}/queue/{item}/link",
                               headers={"X-CSRF-Token": orjson.loads(token)["X-CSRF-Token"]})
    assert answer.status == 403
    page.reload()
    assert page.locator("#decision .state-open").count() == 1  # nothing changed
    # no session, no CSRF token: refused
    assert http("POST", f"{setup['base']}/queue/{item}/apart", b"others=crm:R1",
                {"Content-Type": "application/x-www-form-urlencoded"})[0] == 403
    page.close()


def test_the_quality_report_has_charts_and_a_csv(setup):
    page = login(setup, "stella")
    page.goto(setup["base"] + "/quality")
    page.wait_for_selector("body[data-charts-drawn=yes]")
    assert page.locator("canvas[data-drawn=yes]").count() == 4
    rows = page.inner_text("#per-source")
    assert "crm" in rows and "pos" in rows
    screenshot(page, "workbench-quality.png")
    with page.expect_download() as download:
        page.click("#csv")
    text = Path(download.value.path()).read_text()
    header, *lines = text.splitlines()
    assert header.startswith("day,source,attribute,records,present")
    crm_emails = [line.split(",") for line in lines if ",crm,emails," in line]
    assert crm_emails and int(crm_emails[-1][4]) >= 3  # R1, S1 and N1 hold an e-mail
    page.close()


def test_self_service_corrects_an_email_and_withdraws_marketing(setup):
    watcher, base = setup["watcher"], setup["base"]
    status, body = http("POST", base + "/api/self-service-links", orjson.dumps({"source": "crm", "source_id": "S1"}),
                        {"Authorization": f"Bearer {setup['crm_token']}", "Content-Type": "application/json"})
    assert status == 201, body
    link = orjson.loads(body)["url"]
    assert http("POST", base + "/api/self-service-links", orjson.dumps({"source": "crm", "source_id": "S1"}),
                {"Authorization": "Bearer nope", "Content-Type": "application/json"})[0] == 401
    page = setup["browser"].new_page()
    page.goto(link)
    assert page.locator("input[name=email]").count(), page.content()
    assert page.input_value("input[name=email]") == "sam.carter@gmail.com"
    assert page.is_checked("input[name='consent:marketing:email']")
    page.fill("input[name=email]", "sam.carter@newmail.co.uk")
    page.uncheck("input[name='consent:marketing:email']")
    page.click("#confirm")
    page.wait_for_selector("#thanks")
    page.close()

    before = golden_of(watcher.view, "crm:S1")["golden_id"]
    view = watcher.wait_until(lambda v: v.latest["mastered.marketing"].get(before, b"") is None
                              and "self_service:crm:S1" in (golden_of(v, "crm:S1") or {}).get("members", ()))
    assert ("mastered.marketing", "consent_withdrawn") in view.reasons or any(
        topic == "mastered.marketing" for topic, _ in view.reasons)
    golden = golden_of(view, "crm:S1")
    preferred = next(e for e in golden["emails"] if e["preferred"])
    assert preferred["address"] == "sam.carter@newmail.co.uk" and preferred["verified"]
    assert golden["lineage"]["given_name"]["source"] == "self_service"  # confirmed by the customer: trusted first
    statements = {(c["statement"]["purpose"], c["statement"]["channel"]): c["statement"]["status"]
                  for c in golden["consents"]}
    assert statements[("marketing", "email")] == "revoked"


def test_a_link_reaches_only_its_own_customer(setup):
    base, env = setup["base"], setup["env"]
    sam_link = hub_cli(env, "self-service-link", "crm", "S1")
    nina_link = hub_cli(env, "self-service-link", "crm", "N1")
    page = setup["browser"].new_page()
    page.goto(nina_link)
    assert page.input_value("input[name=given_name]") == "Nina"
    assert "Sam" not in page.content() and "Carter" not in page.content()
    # a link whose payload names another customer, under the first one's signature: refused
    kid, payload, mac = sam_link.rsplit("/", 1)[1].split(".")
    _, nina_payload, _ = nina_link.rsplit("/", 1)[1].split(".")
    forged = f"{base}/s/{kid}.{nina_payload}.{mac}"
    response = page.goto(forged)
    assert response.status == 403 and "Nina" not in page.content()
    # the form of one link cannot be posted under another
    nina_form = page.goto(nina_link) and page.input_value("input[name=form_token]")
    status, _ = http("POST", sam_link, f"form_token={nina_form}&given_name=Nina".encode(),
                     {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403
    page.close()


def test_logins_are_throttled_and_every_form_needs_its_token(setup):
    base = setup["base"]
    page = setup["browser"].new_page()
    for attempt in range(5):
        page.goto(base + "/login")
        page.fill("input[name=user]", "ada")
        page.fill("input[name=password]", f"wrong password {attempt}")
        page.click("button[type=submit]")
        assert "Wrong user name or password" in page.content()
    page.goto(base + "/login")
    page.fill("input[name=user]", "ada")
    page.fill("input[name=password]", PASSWORD)  # right, but too late
    page.click("button[type=submit]")
    assert "Too many failed attempts" in page.content()
    failed = [e for e in access_events(setup) if e["action"] == "login_failed" and e["actor"] == "ada"]
    assert len(failed) == 6
    # a login form posted without the cookie it set is refused
    assert http("POST", base + "/login", b"user=stella&password=x&csrf_token=abc",
                {"Content-Type": "application/x-www-form-urlencoded"})[0] == 403
    page.close()


def test_the_cli_steward_commands_need_a_steward_token(setup):
    env = setup["env"]
    done = subprocess.run([sys.executable, "-m", "hub", "steward", "link", "crm", "N1", "--with", "crm:S1"],
                          env={**env, "HUB_STEWARD_TOKEN": "hubst_forged"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown or revoked steward token" in done.stderr
    viewer_token = hub_cli(env, "user", "token", "victor")
    done = subprocess.run([sys.executable, "-m", "hub", "steward", "split", "crm", "N1", "--from", "crm:S1"],
                          env={**env, "HUB_STEWARD_TOKEN": viewer_token}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "only stewards and admins decide" in done.stderr
    steward_token = hub_cli(env, "user", "token", "stella")
    out = hub_cli({**env, "HUB_STEWARD_TOKEN": steward_token}, "steward", "split", "crm", "N1", "--from", "crm:S1")
    assert out.endswith("as stella")


def test_search_subject_access_export_and_erasure_in_the_browser(setup):
    watcher, base = setup["watcher"], setup["base"]
    page = login(setup, "stella")
    page.goto(base + "/customers?q=Margaret+Holloway")
    assert page.locator("#results tbody tr").count() == 2  # by name: both records, apart again after the undo
    page.goto(base + "/customers")
    page.fill("input[name=q]", "Nina.Okafor@GMAIL.com")
    page.click("form.search button")
    page.click("#results a")
    gid = page.url.rsplit("/", 1)[1]
    with page.expect_download() as download:
        page.click("#export")
    document = orjson.loads(Path(download.value.path()).read_bytes())
    assert document["golden_id"] == gid and document["requested_by"] == "stella"
    assert [m["member"] for m in document["members"]] == ["crm:N1"]
    assert document["members"][0]["record"]["emails"][0]["address"] == "nina.okafor@gmail.com"
    assert any(e["kind"] == "golden_created" for e in document["history"])
    assert {t["target"]: t["received"] for t in document["targets"]}["pos"]
    page.fill("form.erase input[name=confirm]", gid)
    page.click("form.erase button")
    assert "Erasure requested" in page.content()
    watcher.wait_until(lambda v: v.latest["mastered.pos"].get(gid, b"") is None
                       and gid not in v.live("customer.golden"))
    actions = {e["action"] for e in access_events(setup) if e["golden_id"] == gid and e["actor"] == "stella"}
    assert {"golden_viewed", "subject_access_exported", "erasure_requested"} <= actions
    page.goto(f"{base}/customers/{gid}")
    assert "No golden record" in page.content()
    page.close()
