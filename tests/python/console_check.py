"""The operator console (/ui) in headless Chromium over WebDriver (Debian's chromium and
chromium-driver, driven by selenium from PyPI with the driver's path given, so nothing is downloaded).

    console_check.py BASE_URL ADMIN_TOKEN READ_TOKEN SCREENSHOT_DIR

The server holds the samples: digits-graph 1 and 2 (production -> 1), and python-sklearn-graph as
`rides` (traffic like its training data) and `rides-shifted` (the same traffic with `wait_minutes`
scaled x3), whose drift the console must show. Prints one line per check; exits 1 on the first failure.
"""

import json
import os
import shutil
import sys
import threading
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BASE, ADMIN, READ, SHOTS = sys.argv[1:5]
os.makedirs(SHOTS, exist_ok=True)


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def get(path, token):
    request = urllib.request.Request(BASE + path, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


def browser():
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def console_errors(driver):
    """The browser console's errors since the last call (warnings and info pass)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_for(driver, condition, what, timeout=60):
    try:
        return WebDriverWait(driver, timeout).until(lambda d: condition(d))
    except TimeoutException:
        fail(f"timed out waiting for {what}; the page shows:\n{driver.find_element(By.TAG_NAME, 'body').text[:3000]}")


def open_page(driver, hash_, what):
    """Opens a page of the console afresh and waits until it has drawn (body[data-loaded] names it)."""
    driver.get("about:blank")  # a new load, whatever page the tab was on
    driver.get(f"{BASE}/ui{hash_}")
    wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == (hash_ or "#/"), what)
    errors = console_errors(driver)
    if errors:
        fail(f"{what}: console errors {errors}")


def sign_in(driver, token):
    driver.get(f"{BASE}/ui")
    box = wait_for(driver, lambda d: d.find_elements(By.ID, "token"), "the sign-in form")[0]
    if console_errors(driver):
        fail(f"the sign-in page: console errors {console_errors(driver)}")
    box.send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "#/", "the overview after signing in")


def read(driver, script):
    """What `script` returns, read in one turn of the page's event loop: the console redraws itself
    every few seconds, so elements held across calls could go stale."""
    return driver.execute_script(script)


def click(driver, selector):
    """Clicks the element `selector` names, found again if a redraw replaced it meanwhile."""
    for _ in range(5):
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return
        except StaleElementReferenceException:
            continue
    fail(f"{selector} kept being redrawn under the click")


def shot(driver, name):
    """A screenshot of the whole page (the window grown to the page's height, then back)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(1000, height + 120), 6000))
    driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))
    driver.set_window_size(1400, 1000)


def main():
    driver = browser()
    try:
        run(driver)
    finally:
        driver.quit()


def run(driver):
    # ---- As an admin ----
    sign_in(driver, ADMIN)
    who = read(driver, "return document.getElementById('actor').textContent")
    if not who.startswith("ops-admin"):
        fail(f"the header names {who!r}, not the admin credential")
    # The overview lists every model the host lists, with its serving version.
    listed = {m["name"]: m for m in get("/v1/models", ADMIN)["models"]}
    rows = dict(read(driver, "return Array.from(document.querySelectorAll('#models > tbody > tr'))"
                              ".map(r => [r.dataset.model, r.querySelector('.serving').textContent])"))
    if set(rows) != set(listed):
        fail(f"the overview lists {sorted(rows)}, the host {sorted(listed)}")
    for name, serving in rows.items():
        if serving != (listed[name]["default_version"] or "none ready"):
            fail(f"{name}: the overview says serving {serving!r}, the host {listed[name]['default_version']!r}")
    # Requests/s comes from the host's history once an interval with traffic has passed (the
    # overview redraws itself every few seconds), so rides gets requests meanwhile.
    with Traffic("rides"):
        wait_for(driver, lambda d: float(read(d, "const c = document.querySelector('#models tr[data-model=\"rides\"] .rps');"
                                             " return c ? c.textContent : '0'").replace("—", "0")) > 0,
                 "rides' requests/s in the overview", timeout=30)
    if not driver.find_elements(By.ID, "hosts"):
        fail("the overview has no hosts section")
    open_page(driver, "", "the overview")
    shot(driver, "overview")
    print(f"console overview: {len(rows)} models with their serving versions, rates from the history")

    # The model page: versions with self-tests, charts, and drift drawn.
    open_page(driver, "#/models/rides-shifted", "rides-shifted's page")
    cards = read(driver, "const out = {}; for (const c of document.querySelectorAll('#drift .feature'))"
                         " out[c.dataset.feature] = {drifting: c.dataset.drifting, bars: c.querySelectorAll('rect').length};"
                         " return out;")
    report = get("/v1/models/rides-shifted/monitoring", ADMIN)
    features = {f["name"]: f for f in report["versions"][0]["features"]}
    for name, f in features.items():
        card = cards.get(name)
        if card is None:
            fail(f"no drift card for {name}")
        if (card["drifting"] == "true") != f["drifting"]:
            fail(f"{name}: the console says drifting={card['drifting']}, the host {f['drifting']}")
        if not card["bars"]:
            fail(f"{name}: no histogram drawn")
    drifting = sorted(n for n, c in cards.items() if c["drifting"] == "true" and n in features)
    if drifting != ["wait_minutes"]:
        fail(f"drifting features shown: {drifting}, expected only wait_minutes")
    if not read(driver, "return document.querySelectorAll('#charts svg polyline, #charts svg circle').length"):
        fail("no traffic chart drawn on rides-shifted's page")
    shot(driver, "model-drift")
    print(f"console drift: wait_minutes drifting (PSI {features['wait_minutes']['psi']:.2f}), "
          f"{len(features) - 1} other inputs under the threshold, histograms drawn")

    open_page(driver, "#/models/digits-graph", "digits-graph's page")
    versions = read(driver, "return Array.from(document.querySelectorAll('#versions > tbody > tr')).map(r => r.dataset.version)")
    if sorted(versions) != ["1", "2"]:
        fail(f"digits-graph's page lists versions {versions}, not 1 and 2")
    if "passed" not in read(driver, "return document.getElementById('versions').textContent"):
        fail("no self-test results on digits-graph's page")
    compared = read(driver, "const c = document.querySelector('#shadows tr[data-pair=\"1>2\"] .compared');"
                            " return c ? Number(c.textContent) : 0")
    if not compared:
        fail("digits-graph's page shows no agreement of shadow 2 with version 1")
    shot(driver, "model")
    print(f"console shadows: version 2 against 1, {compared} requests compared")

    # A promote made in the console changes what curl gets.
    def production():
        return get("/v1/models/digits-graph", ADMIN)["aliases"].get("production")
    if production() != "1":
        fail(f"production starts at {production()!r}, not 1")
    click(driver, '#versions button[data-action="promote"][data-version="2"]')
    wait_for(driver, lambda d: production() == "2", "production to move to 2")
    wait_for(driver, lambda d: read(d, "const s = document.getElementById('serving'); return s && s.textContent") == "2",
             "the page to show 2 serving")
    answer = predict_version()
    if answer != "2":
        fail(f"after the console's promote, an inference is answered by {answer!r}, not 2")
    print("console promote: production -> 2, and an inference without a version is answered by 2")
    click(driver, '#aliases tr[data-alias="production"] button[data-action="rollback"]')
    wait_for(driver, lambda d: production() == "1", "production to roll back to 1")
    answer = predict_version()
    if answer != "1":
        fail(f"after the console's rollback, an inference is answered by {answer!r}, not 1")
    print("console rollback: production -> 1, and an inference without a version is answered by 1")
    if console_errors(driver):
        fail(f"console errors after the changes: {console_errors(driver)}")

    # The audit log shows both, by the admin.
    open_page(driver, "#/audit", "the audit log")
    text = read(driver, "return document.getElementById('audit').textContent")
    if "ops-admin" not in text or "rollback" not in text or "set_alias" not in text:
        fail(f"the audit log page does not show the console's changes: {text[:2000]}")
    shot(driver, "audit")
    print("console audit: the promote and the rollback recorded under ops-admin")

    # ---- As a read-only credential ----
    click(driver, "#sign-out")
    sign_in(driver, READ)
    for page in ("", "#/models/digits-graph", "#/models/rides-shifted", "#/audit"):
        open_page(driver, page, f"{page or 'the overview'} read-only")
        controls = read(driver, "return Array.from(document.querySelectorAll('button[data-action], #split-form'))"
                                ".map(c => c.textContent)")
        if controls:
            fail(f"{page}: a read-only credential sees edit controls {controls}")
    open_page(driver, "#/models/digits-graph", "digits-graph read-only")
    shot(driver, "model-read-only")
    print("console read-only: every page loads, no edit controls")


class Traffic:
    """Requests to a model's profile-like example on a thread, while the block runs."""

    def __init__(self, model):
        self.model = model
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        fields = {"distance_km": 3.1, "hour": 9, "weekday": 2, "weather": "clear", "pickup_zone": "downtown",
                  "surge": 1.2, "wait_minutes": 5.0, "rider_trips": 20}
        body = json.dumps({"features": fields}).encode()
        while not self.stop.is_set():
            request = urllib.request.Request(f"{BASE}/v1/models/{self.model}/predict", data=body,
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as r:
                r.read()
            self.stop.wait(0.02)

    def __enter__(self):
        self.thread.start()

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def predict_version():
    """The version that answers an inference to digits-graph without a version (the default)."""
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}).encode()
    request = urllib.request.Request(BASE + "/v2/models/digits-graph/infer", data=body,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)["model_version"]


if __name__ == "__main__":
    main()
