"""The Clones page in a real browser (Debian's headless Chromium driven by
Selenium; nothing downloads a browser) against the real api-server, 1280 px
wide: it lists a clone a test created with how to connect, counts down,
bounds and refuses an extension beyond the profile's maximum, follows a
failing run to its error, extends, shows "tearing down" and tears down, all
through the DAGs. Screenshots (light and dark) land in test-artifacts/."""

import os
import shutil
import time
import uuid

import pytest

from support import ROOT, rows

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs Debian's chromium and chromium-driver")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _until(check, timeout=90, what="condition"):
    deadline = time.monotonic() + timeout
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    while time.monotonic() < deadline:
        try:
            value = check()
        except (NoSuchElementException, StaleElementReferenceException):  # the page re-rendered meanwhile
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _banner(browser, *words):
    from selenium.webdriver.common.by import By

    return _until(lambda: (t := browser.find_element(By.ID, "message").text) and all(w in t for w in words) and t,
                  120, f"a message with {words}")


def _fits(browser, element) -> bool:
    return browser.execute_script("const r = arguments[0].getBoundingClientRect(); "
                                  "return r.left >= 0 && r.right <= document.documentElement.clientWidth;", element)


def test_clones_page_lists_refuses_fails_extends_and_tears_down(airflow_server, unpaused, cli, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    env = f"preview-ui-{uuid.uuid4().hex[:6]}"
    code, _, err = cli("up", "--env", env, "--requested-by", "browser-test", "--ttl", "24")
    assert code == 0, err
    url = airflow_server["url"]
    plugins = unpaused._send("GET", "/api/v2/plugins").body["plugins"]
    view = next(p for p in plugins if p["name"] == "prodclone")["external_views"][0]
    assert view["name"] == "Clones" and view["href"] == "/prodclone/clones"

    browser.get(f"{url}/api/v2/monitor/health")  # same origin first, then the login cookie Airflow's UI uses
    browser.add_cookie({"name": "_token", "value": unpaused._token(), "path": "/"})
    browser.get(f"{url}/prodclone/clones")
    row = _until(lambda: browser.find_elements(By.CSS_SELECTOR, f'tr[data-env="{env}"]'), 30, "the env's row")[0]
    assert row.find_element(By.CLASS_NAME, "profile").text == "preview"
    assert row.find_element(By.CLASS_NAME, "snapshot").text == airflow_server["snapshot"]
    assert row.find_element(By.CLASS_NAME, "requested-by").text == "browser-test"
    assert row.find_element(By.CLASS_NAME, "status").text == "ready"
    # 1280 px: every column, the Tear down button included, is on screen.
    assert browser.execute_script("return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert _fits(browser, row.find_element(By.CLASS_NAME, "teardown"))
    # How to connect: the same host/port/database/user psql needs, and the command that fetches the password.
    connect = browser.find_element(By.CSS_SELECTOR, f'tr[data-connect="{env}"]')
    info = unpaused.state()["environments"]
    conn = next(e for e in info if e["name"] == env)["connection"]
    assert connect.find_element(By.CLASS_NAME, "host").text == conn["host"]
    assert connect.find_element(By.CLASS_NAME, "port").text == str(conn["port"])
    assert connect.find_element(By.CLASS_NAME, "database").text == env == connect.find_element(By.CLASS_NAME, "user").text
    assert connect.find_element(By.CLASS_NAME, "credentials").text.endswith(f"prodclone env credentials --env {env}")
    first = row.find_element(By.CLASS_NAME, "countdown").text
    _until(lambda: browser.find_element(By.CSS_SELECTOR, f'tr[data-env="{env}"] .countdown').text != first, 5, "countdown")
    assert airflow_server["snapshot"] in browser.find_element(By.ID, "freshness").text
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "clones-page-1280.png"))
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    dark = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert dark != "rgb(255, 255, 255)"
    browser.save_screenshot(str(ARTIFACTS / "clones-page-1280-dark.png"))
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})

    # The hours box is bounded by what is left under the profile's cap (72h; 24h used), and more is refused.
    hours = row.find_element(By.CLASS_NAME, "hours")
    assert hours.get_attribute("max") == "48"
    hours.clear()
    hours.send_keys("100")
    row.find_element(By.CLASS_NAME, "extend").click()
    assert "extend by 1 to 48 hours" in _banner(browser, env)
    code, _, err = cli("extend", "--env", env, "--hours", "100")  # the server refuses it too, before any run
    assert code == 2 and "at most 48h" in err

    # A run that fails is followed to its error: a snapshot that was pruned after the page listed it.
    browser.execute_script("const o = document.createElement('option'); o.value = o.textContent = arguments[0]; "
                           "document.querySelector('#new select[name=snapshot]').append(o);", "snap-00000000-0000-000000")
    form = browser.find_element(By.ID, "new")
    assert _fits(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert form.find_element(By.NAME, "ttl_hours").get_attribute("max") == "72"
    failing = f"preview-uifail-{uuid.uuid4().hex[:6]}"
    form.find_element(By.NAME, "env").send_keys(failing)
    Select(form.find_element(By.NAME, "snapshot")).select_by_value("snap-00000000-0000-000000")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    message = _banner(browser, f"Clone of {failing} failed at task clone", "does not exist")
    assert "ready snapshots" in message and "Traceback" not in message
    browser.save_screenshot(str(ARTIFACTS / "clones-page-failed-action.png"))

    before = rows(airflow_server["registry"], "SELECT expires_at FROM environments WHERE name = %s", (env,))[0][0]
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-env="{env}"]')
    hours = row.find_element(By.CLASS_NAME, "hours")
    hours.clear()
    hours.send_keys("12")
    row.find_element(By.CLASS_NAME, "extend").click()
    _banner(browser, f"Extension of {env} succeeded")
    after = rows(airflow_server["registry"], "SELECT expires_at FROM environments WHERE name = %s", (env,))[0][0]
    assert 11.9 * 3600 < (after - before).total_seconds() < 12.1 * 3600
    # The page refreshes its state after the run: wait for the new bound (72 - 24 - 12), not the old row.
    _until(lambda: browser.find_element(By.CSS_SELECTOR, f'tr[data-env="{env}"] .hours').get_attribute("max") == "36",
           30, "the hours box's new bound")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-env="{env}"]')

    down = row.find_element(By.CLASS_NAME, "teardown")
    down.click()
    assert down.text == "Confirm"  # one click never deletes
    assert rows(airflow_server["registry"], "SELECT 1 FROM environments WHERE name = %s", (env,))
    down.click()
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-env="{env}"]')
    assert row.find_element(By.CLASS_NAME, "status").text == "tearing down"
    assert not row.find_element(By.CLASS_NAME, "extend").is_enabled()
    assert not row.find_element(By.CLASS_NAME, "teardown").is_enabled()
    _banner(browser, f"Teardown of {env} succeeded")
    assert not rows(airflow_server["registry"], "SELECT 1 FROM environments WHERE name = %s", (env,))
    _until(lambda: not browser.find_elements(By.CSS_SELECTOR, f'tr[data-env="{env}"]'), 30, "the row to go")
    browser.save_screenshot(str(ARTIFACTS / "clones-page-after-teardown.png"))
