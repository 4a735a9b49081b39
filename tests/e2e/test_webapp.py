"""The web pages in a real browser (headless Chromium through Selenium):
a patient signs in at /, reads their own record, records what matters to
them, and signs out; a wrong password is refused on the page (issue 6).

Skipped with a reason when Chromium, chromedriver or Selenium are missing
(`make deps` installs them)."""

import json
import shutil
import subprocess
import tempfile

import pytest

from concordlib import uid

webdriver = pytest.importorskip("selenium.webdriver", reason="python3-selenium is not installed (make deps)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not CHROMIUM or not DRIVER:
        pytest.skip("chromium and chromium-driver are not installed (make deps)")
    profile = tempfile.mkdtemp(prefix="concord-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
              "--window-size=1000,900"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _patient_user(server, fhir):
    r = fhir.post("Patient", {"resourceType": "Patient", "name": [{"family": "Webapp", "given": ["Ada"]}]})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    name, password = "pt-" + uid()[:10], "pw-" + uid()
    add = subprocess.run([server.binary, "user", "add", name, "--role", "patient", "--patient", pid,
                          "--password-stdin", "--db", server.db], input=password + "\n", capture_output=True,
                         text=True, timeout=120)
    assert add.returncode == 0, add.stderr
    return pid, name, password


def _sign_in(d, root, name, password):
    d.get(root + "/")
    d.find_element(By.NAME, "user").send_keys(name)
    d.find_element(By.NAME, "password").send_keys(password)
    d.find_element(By.CSS_SELECTOR, "#signin button[type=submit]").click()


def _json_page(d):
    """The JSON a GET in the browser showed (Chromium wraps it in a <pre>)."""
    return json.loads(d.find_element(By.TAG_NAME, "body").text)


def test_patient_signs_in_reads_own_record_and_records_a_goal(server, fhir, browser):
    pid, name, password = _patient_user(server, fhir)
    d, wait = browser, WebDriverWait(browser, 20)
    _sign_in(d, server.root, name, password)
    who = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "p.who")))
    assert name in who.text and "Patient" in who.text
    assert "Data held" not in d.page_source, "a patient does not see population figures"

    text = f"To walk to the shops again ({uid()[:6]})"
    d.find_element(By.NAME, "text").send_keys(text)
    d.find_element(By.CSS_SELECTOR, "#goal button[type=submit]").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "goal-status"), "Saved"))

    d.find_element(By.LINK_TEXT, "Your record").click()
    bundle = _json_page(d)
    ids = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle.get("entry", [])}
    assert ("Patient", pid) in ids
    goals = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Goal"]
    assert [g["description"]["text"] for g in goals] == [text]
    tags = json.dumps(goals[0].get("meta", {}).get("tag", []))
    assert "patient" in tags.lower(), f"the goal is not marked as the patient's own: {tags}"

    d.get(server.root + "/fhir/$access-log")
    log = _json_page(d)
    assert log.get("resourceType") == "Bundle" and log.get("entry"), "the patient sees their access log"

    d.get(server.root + "/fhir/Patient/" + pid + "x")  # somebody else's (or nobody's) record
    assert "OperationOutcome" in d.page_source

    d.get(server.root + "/")
    d.find_element(By.ID, "signout").click()
    wait.until(EC.presence_of_element_located((By.ID, "signin")))
    d.get(server.root + "/fhir/Patient/" + pid)
    assert "OperationOutcome" in d.page_source and pid not in d.find_element(By.TAG_NAME, "body").text.split(
        "diagnostics")[0]


def test_wrong_password_is_refused_on_the_page(server, fhir, browser):
    _pid, name, _password = _patient_user(server, fhir)
    _sign_in(browser, server.root, name, "not-the-password")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "signin-error").text.strip())
    assert browser.find_elements(By.ID, "signin"), "still on the sign-in form"
    assert not browser.find_elements(By.CSS_SELECTOR, "p.who")
