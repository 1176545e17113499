"""report.html in a real browser: headless Chromium (Debian's ``chromium``) at a laptop's width.

Checked: every image loads, nothing sticks out of the 1366 px wide window
(no horizontal scrolling, no image or table past its right edge), and the
console holds no error. Chromium is driven through the DevTools protocol over
``--remote-debugging-pipe`` (NUL-separated JSON on file descriptors 3 and 4),
so no websocket client or browser download is needed.

``python tests/report/test_browser.py RUN_DIR/report.html OUT.png`` saves a
full-page screenshot (docs/figures/report_screenshot.png was made this way).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

WIDTH, HEIGHT = 1366, 768  # the most common laptop screen
LOAD_TIMEOUT_S = 60.0  # a deadline for Chromium's answers, not a wait

CHECKS_JS = """(() => {
  const w = document.documentElement.clientWidth;
  const scrollable = el => { for (let a = el.parentElement; a; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX; if (o === 'auto' || o === 'scroll') return true; } return false; };
  const outside = [...document.querySelectorAll('img, table, pre, h1, h2, h3, p')]
    .filter(el => { const r = el.getBoundingClientRect(); return r.width > 0 && (r.left < -1 || r.right > w + 1) && !scrollable(el); })
    .map(el => el.tagName + ' ' + (el.getAttribute('alt') || el.textContent.slice(0, 40)).trim());
  return {
    images: document.images.length,
    broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src.slice(0, 60)),
    clientWidth: w, scrollWidth: document.documentElement.scrollWidth, outside,
    height: document.documentElement.scrollHeight,
  };
})()"""


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """Headless Chromium driven through the DevTools protocol over a pipe."""

    def __init__(self, exe: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="mnist-ssl-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def fds() -> None:  # in the child: the pipe ends on 3 (it reads) and 4 (it writes)
            # Copies first: a pipe end may itself be fd 3 or 4, and dup2 onto itself would
            # leave it close-on-exec.
            reads, writes = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--hide-scrollbars", f"--user-data-dir={self.profile}", "about:blank"],
            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str) -> dict:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        for i, e in enumerate(self.events):
            if e.get("method") == event:
                return self.events.pop(i)
        while True:
            e = self._read_message(deadline)
            if e.get("method") == event:
                return e
            self.events.append(e)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=LOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


def console_errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            out.append(p.get("exceptionDetails", {}).get("text", "exception"))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(p["entry"].get("text", ""))
    return out


def inspect_page(html: Path, screenshot: Path | None = None, exe: str | None = None) -> dict:
    """Open ``html`` at WIDTH x HEIGHT; returns CHECKS_JS's findings plus ``console_errors``."""
    browser = Chromium(exe or chromium_path())
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}, session)
        browser.send("Page.navigate", {"url": html.resolve().as_uri()}, session)
        browser.wait_for("Page.loadEventFired")  # after every image has loaded or failed
        result = browser.send("Runtime.evaluate", {"expression": CHECKS_JS, "returnByValue": True}, session)
        found = result["result"]["value"]
        if screenshot is not None:
            shot = browser.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": WIDTH, "height": found["height"], "scale": 1}}, session)
            import base64

            screenshot.write_bytes(base64.b64decode(shot["data"]))
        found["console_errors"] = console_errors(browser.events)
        return found
    finally:
        browser.close()


@pytest.fixture(scope="module")
def chromium():
    exe = chromium_path()
    if exe is None:
        if os.environ.get("CI"):  # .ci/run installs it: a CI run without it must not pass silently
            pytest.fail("no Chromium in CI: .ci/run should have installed it (apt-get install chromium)")
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it)")
    return exe


def _report(folder: Path) -> Path:
    from mnist_ssl.report.report import build_report

    from .test_report import make_run_folder

    make_run_folder(folder)
    return Path(build_report(folder)[1])


@pytest.fixture(scope="module")
def report_page(tmp_path_factory, chromium):
    folder = tmp_path_factory.mktemp("report")
    found = inspect_page(_report(folder), folder / "shot.png", chromium)
    return found, folder / "shot.png"


def test_report_images_load_without_console_errors(report_page):
    found, shot = report_page
    assert found["images"] >= 5, found
    assert found["broken"] == [], found
    assert found["console_errors"] == [], found
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (WIDTH, found["height"])


def test_report_fits_a_laptop_width(report_page):
    found, _ = report_page
    assert found["clientWidth"] == WIDTH
    assert found["scrollWidth"] <= WIDTH, found
    assert found["outside"] == [], found


def test_the_checks_catch_a_broken_page(tmp_path, chromium):
    """A missing image, a too-wide table and a script error are each reported."""
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><html><body><img alt='gone' src='missing.png'>"
                    "<table style='width:3000px'><tr><td>wide</td></tr></table>"
                    "<script>console.error('boom')</script></body></html>")
    found = inspect_page(page, None, chromium)
    assert found["broken"] == ["gone"]
    assert found["scrollWidth"] > WIDTH and found["outside"] == ["TABLE wide"]
    assert any("boom" in e for e in found["console_errors"])
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in found["console_errors"])


if __name__ == "__main__":
    html, out = Path(sys.argv[1]), Path(sys.argv[2])
    print(json.dumps(inspect_page(html, out), indent=2))
