"""The web console in a real headless Chromium against a real ``router run``: it loads, asks for
credentials, shows the functions and routes, runs a test invoke with a saved event and shows its result
and logs, redrives a failed event, and pauses and resumes a route.

Set ROUTER_CONSOLE_SCREENSHOTS=DIR to keep screenshots of the main pages (docs/ holds the committed ones).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.router_process import RouterFactory, RouterProcess, http
from tests.waiting import until_sync

TOKEN = "console-test-token"
HELLO = """
    def handler(event, context):
        print("hello from the console test:", event.get("name"))
        return {"greeting": "hello " + str(event.get("name"))}
"""
FAILS = """
    import os

    def handler(event, context):
        if not os.path.exists(os.environ["FIXED"]):
            raise ValueError("not fixed yet")
        with open(os.environ["DONE"], "a") as f:
            f.write("ran\\n")
"""


def _start(router_factory: RouterFactory, tmp_path: Path) -> RouterProcess:
    hello = router_factory.write_function("hello", HELLO)
    fails = router_factory.write_function("fails", FAILS)
    return router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, console: true, invoke_token: {TOKEN}}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          hello: {{runtime: python3.11, handler: app.handler, code: {hello}, timeout: 10s}}
          fails: {{runtime: python3.11, handler: app.handler, code: {fails}, timeout: 10s,
                  environment: {{FIXED: "{tmp_path / 'fixed'}", DONE: "{tmp_path / 'done.txt'}"}},
                  async: {{retries: 0}}}}
        routes:
          - {{name: greet, source: {{type: webhook, path: /greet}}, function: hello}}
    """)


def _shot(driver: Any, name: str) -> None:
    folder = os.environ.get("ROUTER_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"console-{name}.png"))


def _wait(driver: Any, css: str, text: str | None = None, timeout: float = 20.0) -> Any:
    """The first element matching ``css`` (whose text contains ``text``), once it is there. The overview
    redraws itself every few seconds: an element that went stale is looked up again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def found() -> Any:
        try:
            for el in driver.find_elements(By.CSS_SELECTOR, css):
                if text is None or text in el.text:
                    return el
        except StaleElementReferenceException:
            pass
        return None

    return until_sync(found, f"{css} {text or ''}".strip(), deadline=timeout)


def _click(driver: Any, css: str, text: str | None = None) -> None:
    """Click the element ``_wait`` finds, again if the page redrew it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException

    def clicked() -> bool:
        try:
            _wait(driver, css, text).click()
        except StaleElementReferenceException:
            return False
        return True

    until_sync(clicked, f"click {css}", deadline=20)


def test_the_console_end_to_end(router_factory: RouterFactory, tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    rp = _start(router_factory, tmp_path)
    browser.get(rp.url + "/console")
    # Without credentials the APIs refuse, and the page says so.
    error = _wait(browser, "#error")
    assert "403" in error.text
    assert "set the credentials above" in error.text
    browser.find_element(By.ID, "auth-secret").send_keys(TOKEN)
    browser.find_element(By.ID, "auth-save").click()
    _wait(browser, "#functions tr[data-function=hello]", "active")
    _wait(browser, "#routes tr[data-route=greet]", "enabled")
    _shot(browser, "overview")

    # A test invoke with a saved event: the response and the function's log lines are shown.
    _click(browser, "#functions tr[data-function=hello] a")
    _wait(browser, "#function-name", "hello")
    editor = browser.find_element(By.ID, "event-json")
    editor.clear()
    editor.send_keys(json.dumps({"name": "browser"}))
    browser.find_element(By.ID, "event-save-name").send_keys("greeting")
    browser.find_element(By.ID, "event-save").click()
    _wait(browser, "#event-name option", "greeting")
    browser.find_element(By.ID, "invoke").click()
    response = _wait(browser, "#invoke-response", "hello browser")
    assert json.loads(response.text) == {"greeting": "hello browser"}
    logs = _wait(browser, "#invoke-logs", "hello from the console test: browser")
    assert "START RequestId:" in logs.text
    assert "REPORT RequestId:" in logs.text
    _shot(browser, "function")
    # The invocation shows in the function's recent invocations (written in batches, shown at the next
    # refresh), and its page has its status, attempt and logs.
    request_id = browser.find_element(By.ID, "invoke-request-id").text
    _click(browser, "#recent-refresh")
    _click(browser, f"#recent tr[data-request-id='{request_id}'] a")
    _wait(browser, "#logs", "hello from the console test: browser")
    assert "succeeded" in browser.find_element(By.CSS_SELECTOR, "h2 .pill").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")) == 1
    assert json.loads(browser.find_element(By.ID, "result").text) == {"greeting": "hello browser"}
    assert "[object" not in browser.find_element(By.ID, "main").text
    _shot(browser, "invocation")

    # The overview counts it from /metrics (read by the page every 5 s).
    browser.get(rp.url + "/console#/")
    _wait(browser, "#functions tr[data-function=hello] td.invocations", "1", timeout=30)
    _wait(browser, "#functions tr[data-function=hello]", "python3.11")

    # A failed event: kept, shown, redriven from the page; the redrive runs the function once more.
    status, _, _ = http("POST", rp.url + "/2015-03-31/functions/fails/invocations", b"{}",
                        headers={"Authorization": f"Bearer {TOKEN}", "X-Amz-Invocation-Type": "Event"})
    assert status == 202

    def kept() -> list[dict[str, Any]]:
        _, _, body = http("GET", rp.url + "/admin/failures", headers={"Authorization": f"Bearer {TOKEN}"})
        return list(json.loads(body)["failures"])

    [failure] = until_sync(kept, "the failed event kept", deadline=30)
    (tmp_path / "fixed").touch()
    browser.get(rp.url + "/console#/failures")
    row = _wait(browser, f"#failures tr[data-failure='{failure['id']}']", "RetriesExhausted")
    assert "not fixed yet" in row.text
    _shot(browser, "failures")
    _click(browser, f"#failures tr[data-failure='{failure['id']}'] button.redrive")
    _wait(browser, "#redrive-done")
    _wait(browser, f"#failures tr[data-failure='{failure['id']}'] .redriven")
    done = tmp_path / "done.txt"
    until_sync(lambda: done.exists() and done.read_text() == "ran\n", "the redrive ran", deadline=30)

    # Pause and resume a route from the overview: the webhook answers 503 while paused.
    browser.get(rp.url + "/console#/")
    _click(browser, "#routes tr[data-route=greet] button.toggle", "Pause")
    _wait(browser, "#routes tr[data-route=greet]", "paused")
    assert http("POST", rp.url + "/greet", b"{}")[0] == 503
    _shot(browser, "paused")
    _click(browser, "#routes tr[data-route=greet] button.toggle", "Resume")
    _wait(browser, "#routes tr[data-route=greet]", "enabled")
    assert http("POST", rp.url + "/greet", b"{}")[0] == 200
    assert rp.stop() == 0
