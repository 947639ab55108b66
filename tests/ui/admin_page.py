#!/usr/bin/python3
"""Drives the admin page of a running `wormfs serve` in headless Chromium (Debian's chromium,
chromium-driver and python3-selenium), as server/tests/faces/admin_page.rs starts it.

Every wait is on a condition with a deadline; nothing sleeps a fixed time and nothing asserts a
duration. Chromium reaches nothing but 127.0.0.1: every other address goes to a proxy that is
not there, host names do not resolve, and its background services are off.

Input: the environment variable WORMFS_UI_TEST, a JSON object:
  url         the node's API, http://127.0.0.1:PORT
  admin       "admin:PASSWORD", the generated admin user
  rw          "NAME:PASSWORD", a user with the rw role
  ro_token    a read-only API token
  drop        the drop folder (it goes to /incoming in the tree)
  lost_disk   a disk folder to delete (holding a part of the dropped file)
  drain_disk  the path of another disk, to drain from the page
  extra_disk  a folder to add as a disk from the page (a drain needs a spare)
  shots       where screenshots go
Exits 0 when every check passed; prints what failed otherwise.
"""

import base64
import json
import os
import shutil
import sys
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CFG = json.loads(os.environ["WORMFS_UI_TEST"])
URL = CFG["url"]
SHOTS = CFG["shots"]
WAIT = 120  # seconds: the deadline of every wait


def phase(text):
    print("== " + text, flush=True)


def http(method, path, cookie=None, headers=None, body=None):
    """A request outside the browser: (status, body text)."""
    req = urllib.request.Request(URL + path, method=method, data=body)
    if cookie:
        req.add_header("Cookie", "wormfs_session=" + cookie)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def browser():
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        # Nothing but 127.0.0.1: other addresses through a proxy that does not exist (loopback
        # is never proxied), host names unresolvable.
        "--proxy-server=http://127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-features=OptimizationHints,MediaRouter,Translate,NetworkTimeServiceQuerying",
        "--no-first-run",
        "--no-default-browser-check",
        "--metrics-recording-only",
        "--dns-prefetch-disable",
        "--user-data-dir=" + os.path.join(SHOTS, ".chromium-profile"),
    ]:
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=o)


D = browser()


def wait(what, cond):
    """Waits for cond() to be truthy, up to WAIT seconds; fails naming `what`."""
    # The page redraws a panel by replacing its elements: one found by a poll may be gone by
    # the time it is read. That is not an answer; the next poll looks again.
    try:
        return WebDriverWait(D, WAIT, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda _d: cond())
    except Exception as e:  # a timeout, with what was awaited
        shot("timeout")
        raise AssertionError("timed out waiting for " + what) from e


def el(css):
    found = D.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


def visible(css):
    e = el(css)
    return e is not None and e.is_displayed()


def text(css):
    e = el(css)
    return e.text if e is not None else ""


def read(css, f):
    """f(the element css finds), found and read again if a redraw replaced it meanwhile."""
    def once():
        e = el(css)
        return None if e is None else [f(e)]
    return wait("to read " + css, once)[0]


def click(css):
    """Clicks the element css finds, found again if a redraw replaced it before the click."""
    def once():
        e = el(css)
        if e is None:
            return False
        e.click()
        return True
    wait("to click " + css, once)


def shot(name):
    """A screenshot of the whole page, beyond the window's height (Chromium's DevTools)."""
    m = D.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = m["cssContentSize"]
    r = D.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}})
    with open(os.path.join(SHOTS, name + ".png"), "wb") as f:
        f.write(base64.b64decode(r["data"]))


def console_errors():
    """The browser's errors since the last call (reading the log empties it)."""
    return [e for e in D.get_log("browser") if e["level"] == "SEVERE"]


def no_console_errors(where):
    errs = console_errors()
    assert not errs, where + ": console errors: " + json.dumps(errs, indent=1)


def only_expected_errors(where, *expected):
    """The errors since the last check all name one of `expected` (a deliberate refusal)."""
    for e in console_errors():
        assert any(x in e["message"] for x in expected), where + ": unexpected console error: " + e["message"]


def fetch(method, path, csrf=True):
    """A request from the page with its cookie; with the session's CSRF token unless told."""
    return D.execute_async_script(
        """
        const [method, path, csrf, done] = arguments;
        const headers = {};
        if (csrf && state.session) headers["X-CSRF-Token"] = state.session.csrf_token;
        fetch(path, {method, headers, credentials: "same-origin"})
          .then(async r => done({status: r.status, body: await r.text()}))
          .catch(e => done({status: 0, body: String(e)}));
        """,
        method, path, csrf)


def tab(name):
    D.find_element(By.CSS_SELECTOR, '.tab[data-panel="%s"]' % name).click()
    wait(name + " panel shown", lambda: visible("#panel-" + name) and el("#panel-" + name + " .card") is not None)


def login_with(user=None, password=None, token=None):
    for css, value in (("#login-user", user), ("#login-password", password), ("#login-token", token)):
        f = D.find_element(By.CSS_SELECTOR, css)
        f.clear()
        if value:
            f.send_keys(value)
    D.find_element(By.CSS_SELECTOR, "#login-submit").click()


def logout():
    D.find_element(By.CSS_SELECTOR, "#logout").click()
    wait("the login form after logout", lambda: visible("#login") and not visible("#app"))


def api_json(path):
    r = fetch("GET", path)
    assert r["status"] == 200, (path, r)
    return json.loads(r["body"])


def main():
    os.makedirs(SHOTS, exist_ok=True)
    for old in os.listdir(SHOTS):
        if old.endswith(".png"):
            os.remove(os.path.join(SHOTS, old))
    admin_user, admin_pw = CFG["admin"].split(":", 1)
    rw_user, rw_pw = CFG["rw"].split(":", 1)

    phase("without a session: the API refuses, the page shows only the login form")
    for method, path in [("GET", "/api/v1/status"), ("GET", "/api/v1/disks"), ("GET", "/api/v1/health/report"),
                         ("GET", "/api/v1/ingest"), ("POST", "/api/v1/repair/pause"),
                         ("POST", "/api/v1/disks/00000000-0000-0000-0000-000000000000/drain")]:
        status, _ = http(method, path)
        assert status == 401, (method, path, status)
        status, _ = http(method, path, cookie="f" * 64)
        assert status == 401, ("a made-up session", method, path, status)
    status, _ = http("GET", "/api/v1/session")
    assert status == 204, status
    D.get(URL + "/")
    wait("the login form", lambda: visible("#login-form"))
    assert not visible("#app"), "the panels are shown without a login"
    assert D.execute_script("return document.querySelectorAll('.panel .card').length") == 0
    shot("login")
    no_console_errors("the login page")

    phase("a file user (rw) is refused with a clear message")
    login_with(rw_user, rw_pw)
    wait("the refusal of the rw user", lambda: "admin role" in text("#login-error"))
    assert not visible("#app")
    only_expected_errors("the rw login", "/api/v1/session")

    phase("a read-only token sees but cannot act")
    login_with(token=CFG["ro_token"])
    wait("the overview of the read-only session", lambda: visible("#panel-overview") and el("#health-sentence") is not None)
    assert visible("#readonly-note")
    tab("disks")
    wait("the disks table", lambda: el("#panel-disks tr[data-disk]") is not None)
    assert el("#panel-disks button[data-action]") is None, "actions shown to a read-only session"
    tab("repair")
    assert el("#repair-pause") is None and el("#repair-resume") is None
    r = fetch("POST", "/api/v1/repair/pause")
    assert r["status"] == 403, r
    assert api_json("/api/v1/repair")["paused"] is False
    only_expected_errors("the read-only session's refused action", "/api/v1/repair/pause")
    logout()

    phase("the admin user logs in")
    login_with(admin_user, admin_pw)
    wait("a healthy overview", lambda: el("#health-sentence") is not None
         and el("#health-sentence").get_attribute("data-verdict") == "full")
    assert not visible("#readonly-note")
    shot("overview")
    no_console_errors("the overview")

    phase("a file dropped into the drop folder goes through the ingest panel to done")
    tab("ingest")
    name = "dropped.bin"
    seen = set()

    def settling():
        e = el('#panel-ingest [data-count="settling"] .v')
        return e is not None and e.text not in ("", "0")

    # Written a little at a time until the panel shows it settling (each write starts its
    # settle time again), then left alone: the node takes it once unchanged for the settle time.
    with open(os.path.join(CFG["drop"], name), "wb") as f:
        f.write(bytes((i * 7919) % 251 for i in range(2 * 1024 * 1024)))
        f.flush()
        chunk = 0
        while True:
            try:
                WebDriverWait(D, 1, poll_frequency=0.2).until(lambda _d: settling())
                break
            except TimeoutException:
                chunk += 1
                assert chunk < WAIT, "the panel never showed the file settling"
                f.write(bytes([chunk % 256]) * 65536)
                f.flush()
    seen.add("settling")

    def state_of_drop():
        row = el('#panel-ingest tr[data-state][data-source$="%s"]' % name)
        if row is not None:
            seen.add(row.get_attribute("data-state"))
            return row.get_attribute("data-state") == "done"
        return False

    wait("the dropped file done in the ingest panel", state_of_drop)
    print("states seen:", sorted(seen), flush=True)
    assert read('#panel-ingest [data-count="done"] .v', lambda e: e.text) == "1"
    shot("ingest")
    no_console_errors("the ingest panel")

    phase("the file in the files panel: policy, tolerance, where its parts are")
    tab("files")
    wait("the incoming directory", lambda: el('#listing button[data-key="dir-/incoming"]') is not None)
    click('#listing button[data-key="dir-/incoming"]')
    wait("the dropped file listed", lambda: el('#listing button[data-key="file-/incoming/%s"]' % name) is not None)
    click('#listing button[data-key="file-/incoming/%s"]' % name)
    wait("the file's part map", lambda: el("#part-map .diskbox") is not None and el("#file-tolerance") is not None)
    full_parts, policy_parts, tol_text = read("#file-tolerance", lambda e: (
        int(e.get_attribute("data-parts")), int(e.get_attribute("data-policy-parts")), e.text))
    assert full_parts == policy_parts and full_parts > 0, tol_text
    assert len(D.find_elements(By.CSS_SELECTOR, "#part-map .diskbox")) == 6
    shot("files")
    no_console_errors("the files panel")

    phase("repair paused from the page")
    tab("repair")
    wait("the pause button", lambda: el("#repair-pause") is not None)
    click("#repair-pause")
    wait("repair paused", lambda: el("#repair-resume") is not None)
    assert api_json("/api/v1/repair")["paused"] is True

    phase("an action without the CSRF token is refused and changes nothing")
    r = fetch("POST", "/api/v1/repair/resume", csrf=False)
    assert r["status"] == 403 and "CSRF" in r["body"], r
    assert api_json("/api/v1/repair")["paused"] is True, "the refused resume resumed repair"
    disks = api_json("/api/v1/disks")["disks"]
    drain = next(d for d in disks if d["path"].rstrip("/") == CFG["drain_disk"].rstrip("/"))
    r = fetch("POST", "/api/v1/disks/%s/drain" % drain["disk_id"], csrf=False)
    assert r["status"] == 403, r
    r = D.execute_async_script(
        """const done = arguments[0];
        fetch("/api/v1/repair/resume", {method: "POST", credentials: "same-origin",
          headers: {"X-CSRF-Token": "0".repeat(64)}}).then(r => done(r.status));""")
    assert r == 403, r
    assert api_json("/api/v1/repair")["paused"] is True
    assert next(d for d in api_json("/api/v1/disks")["disks"] if d["disk_id"] == drain["disk_id"])["status"] == "up"
    only_expected_errors("the refused requests", "/api/v1/repair/resume", "/drain")

    phase("a disk added from the disks panel, through its confirmation")
    tab("disks")
    wait("the add button", lambda: el('#panel-disks button[data-key^="add-"]') is not None)
    click('#panel-disks button[data-key^="add-"]')
    wait("the add dialog", lambda: visible("#confirm") and visible("#confirm-path"))
    read("#confirm-path", lambda e: e.send_keys(CFG["extra_disk"]))
    click("#confirm-ok")
    wait("the dialog closed after the add", lambda: not visible("#confirm"))
    wait("seven disks in the panel", lambda: len(D.find_elements(By.CSS_SELECTOR, "#panel-disks tr[data-disk]")) == 7)
    assert "disk" in text("#message"), text("#message")

    phase("a drain started from the disks panel, through its confirmation")
    button = '#panel-disks tr[data-disk="%s"] button[data-action="drain"]' % drain["disk_id"]
    wait("the drain button", lambda: el(button) is not None)
    click(button)
    wait("the confirmation dialog", lambda: visible("#confirm") and "If this disk failed now" in text("#confirm-body"))
    assert "Drain" in text("#confirm-body")
    shot("disks-confirm")
    # Cancel first: nothing happens.
    click("#confirm-cancel")
    wait("the dialog closed", lambda: not visible("#confirm"))
    assert next(d for d in api_json("/api/v1/disks")["disks"] if d["disk_id"] == drain["disk_id"])["status"] == "up"
    click(button)
    wait("the confirmation dialog again", lambda: visible("#confirm") and "If this disk failed now" in text("#confirm-body"))
    click("#confirm-ok")
    wait("the dialog closed after the drain", lambda: not visible("#confirm"))
    wait("the disk draining in the panel", lambda: el('#panel-disks tr[data-disk="%s"] [data-disk-state="draining"]' % drain["disk_id"]) is not None)
    shot("disks")
    no_console_errors("the drain")

    phase("a disk's folder deleted: the overview turns degraded, the file's tolerance drops")
    shutil.rmtree(CFG["lost_disk"])
    tab("overview")
    wait("a degraded overview", lambda: el("#health-sentence") is not None
         and el("#health-sentence").get_attribute("data-verdict") in ("degraded", "unreadable"))
    badge = read("#health-badge", lambda e: e.get_attribute("class"))
    assert "bad" in badge or "warn" in badge, badge
    shot("overview-degraded")
    tab("files")
    wait("the file's tolerance below its policy", lambda: el("#file-tolerance") is not None
         and int(el("#file-tolerance").get_attribute("data-parts")) < full_parts)
    shot("files-degraded")
    tab("repair")
    wait("the repair queue", lambda: el("#panel-repair td[data-label='why']") is not None)
    shot("repair")

    phase("the events panel, and the overview's alerts")
    tab("events")
    wait("the lost disk's event", lambda: el('#panel-events tr[data-kind="disk_down"]') is not None
         or el('#panel-events tr[data-kind="disk_out"]') is not None)
    assert el('#panel-events tr[data-kind="disk_draining"]') is not None, "no event of the drain"
    shot("events")
    tab("overview")
    wait("the lost disk among the alerts", lambda: "disk-0" in text("#alerts"))

    phase("a phone's width")
    # A window cannot be made that narrow: the phone's screen is emulated.
    D.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": True})
    for panel in ("overview", "disks", "files", "ingest", "repair", "events"):
        tab(panel)
        widths = D.execute_script(
            "return [document.documentElement.clientWidth, document.documentElement.scrollWidth]")
        assert widths[0] == 375 and widths[1] <= 375, "the %s panel is wider than a phone: %s" % (panel, widths)
        if panel in ("overview", "disks"):
            shot("phone-" + panel)
    D.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    phase("keyboard: the tabs are buttons that take the focus")
    first = el('.tab[data-panel="overview"]')
    D.execute_script("arguments[0].focus()", first)
    assert D.switch_to.active_element == first
    no_console_errors("the panels")

    phase("logout ends the session on the node")
    cookie = next(c["value"] for c in D.get_cookies() if c["name"] == "wormfs_session")
    assert http("GET", "/api/v1/status", cookie=cookie)[0] == 200
    assert http("POST", "/api/v1/repair/resume", cookie=cookie)[0] == 403, "a change without the CSRF token"
    logout()
    assert http("GET", "/api/v1/status", cookie=cookie)[0] == 401
    D.get(URL + "/")
    wait("the login form after a reload", lambda: visible("#login-form"))
    assert not visible("#app")
    no_console_errors("after logout")
    print("ALL CHECKS PASSED", flush=True)


try:
    main()
except BaseException:
    try:
        shot("failure")
        print("browser log:", json.dumps(D.get_log("browser"), indent=1), file=sys.stderr)
    except Exception:
        pass
    raise
finally:
    D.quit()
