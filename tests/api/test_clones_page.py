"""The Clones page in a real browser (Debian's headless Chromium driven by
Selenium; nothing downloads a browser) against the real api-server: it lists
a clone a test created, counts down, extends it and tears it down through
the DAGs. A screenshot lands in test-artifacts/."""

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
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _until(check, timeout=90, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def test_clones_page_lists_extends_and_tears_down(airflow_server, unpaused, cli, browser):
    from selenium.webdriver.common.by import By

    env = f"preview-ui-{uuid.uuid4().hex[:6]}"
    code, _, err = cli("up", "--env", env, "--requested-by", "browser-test")
    assert code == 0, err
    url = airflow_server["url"]
    plugins = unpaused._send("GET", "/api/v2/plugins").body["plugins"]
    view = next(p for p in plugins if p["name"] == "prodclone")["external_views"][0]
    assert view["name"] == "Clones" and view["href"] == "/prodclone/clones"

    browser.get(f"{url}/api/v2/monitor/health")  # same origin first, then the login cookie Airflow's UI uses
    browser.add_cookie({"name": "_token", "value": unpaused._token(), "path": "/"})
    browser.get(f"{url}/prodclone/clones")
    row = _until(lambda: browser.find_elements(By.CSS_SELECTOR, f'tr[data-env="{env}"]'), 30, "the env's row")[0]
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "preview" and cells[2].startswith(airflow_server["snapshot"]) and cells[3] == "browser-test"
    assert cells[8] == "ready"
    first = row.find_element(By.CLASS_NAME, "countdown").text
    _until(lambda: browser.find_element(By.CSS_SELECTOR, f'tr[data-env="{env}"] .countdown').text != first, 5, "countdown")
    assert airflow_server["snapshot"] in browser.find_element(By.ID, "freshness").text
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "clones-page.png"))

    before = rows(airflow_server["registry"], "SELECT expires_at FROM environments WHERE name = %s", (env,))[0][0]
    hours = row.find_element(By.CLASS_NAME, "hours")
    hours.clear()
    hours.send_keys("12")
    row.find_element(By.CLASS_NAME, "extend").click()
    message = _until(lambda: browser.find_element(By.ID, "message").text, 10, "the extend message")
    assert f"Extension of {env} started: prodclone_extend run" in message
    after = _until(lambda: (r := rows(airflow_server["registry"], "SELECT expires_at FROM environments WHERE name = %s",
                                      (env,))[0][0]) > before and r, what="the new expiry")
    assert 11.9 * 3600 < (after - before).total_seconds() < 12.1 * 3600

    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-env="{env}"]')
    down = row.find_element(By.CLASS_NAME, "teardown")
    down.click()
    assert down.text == "Confirm tear down"  # one click never deletes
    assert rows(airflow_server["registry"], "SELECT 1 FROM environments WHERE name = %s", (env,))
    down.click()
    _until(lambda: "Teardown of" in browser.find_element(By.ID, "message").text, 10, "the teardown message")
    _until(lambda: not rows(airflow_server["registry"], "SELECT 1 FROM environments WHERE name = %s", (env,)),
           what="the env to be torn down")
    browser.refresh()
    _until(lambda: browser.find_elements(By.CSS_SELECTOR, "#envs tbody tr"), 30, "the table")
    assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-env="{env}"]')
    browser.save_screenshot(str(ARTIFACTS / "clones-page-after-teardown.png"))
