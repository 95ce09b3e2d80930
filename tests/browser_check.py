"""Open every page of the built book in headless Chromium and check what a reader would see.

    python tests/browser_check.py [book/_build/html]

For each HTML page: no broken image (naturalWidth == 0), no figure without an image, no Python
traceback text, no error output cell, no formula MathJax could not parse; a full-page screenshot
goes to book/_build/screenshots/.
The book is served from 127.0.0.1 by http.server in a thread (pages load the way a reader's browser
loads them, MathJax included). Chromium is Debian's (/usr/bin/chromium) driven through Debian's
chromedriver with Selenium, with every background-networking feature off (this machine has no
network and the book must not need one).

Where Chromium is absent the check says "skipped" and passes, unless VISIONCLIP_BROWSER_CHECK=required
(set by .ci/run), in which case it fails.
"""
from __future__ import annotations

import http.server
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# The PDF printer's Chromium: the same flags (no network features), lookup, driver and server.
from visionclip.report.pdf import CHROMIUM_FLAGS as PDF_FLAGS, chromium_driver, find_chromium, serve as serve_dir

ROOT = Path(__file__).resolve().parent.parent
HTML_DIR = ROOT / "book" / "_build" / "html"
REQUIRED_ENV = "VISIONCLIP_BROWSER_CHECK"
PAGE_WIDTH, MAX_PAGE_HEIGHT = 1280, 12000
# Screenshots: a screen's window (not the printer's page) and no scrollbars in them.
CHROMIUM_FLAGS = [*(f for f in PDF_FLAGS if not f.startswith("--window-size=")), "--hide-scrollbars",
                  f"--window-size={PAGE_WIDTH},1024"]

# Run inside each page once it has loaded; returns a list of problems (strings).
PAGE_PROBE = r"""
const problems = [];
for (const img of document.querySelectorAll('img')) {
  if (!img.complete || img.naturalWidth === 0) problems.push('broken image: ' + (img.getAttribute('src') || '').slice(0, 120));
}
for (const fig of document.querySelectorAll('figure')) {
  if (!fig.querySelector('img, svg, canvas, video, object, embed, table')) problems.push('figure without an image: ' + fig.textContent.trim().slice(0, 80));
}
const text = document.body ? document.body.innerText : '';
for (const needle of ['Traceback (most recent call last)', 'PapermillExecutionError', 'CellExecutionError',
                      'Math input error']) {  // the last: MathJax could not parse a formula
  if (text.includes(needle)) problems.push('page shows "' + needle + '"');
}
for (const cell of document.querySelectorAll('.output.traceback, .output.error, .output.stderr, .cell_output .stderr')) {
  const t = cell.innerText || '';
  if (/Traceback|Error\b|Exception\b/.test(t)) problems.push('error output cell: ' + t.trim().slice(0, 160));
}
for (const cell of document.querySelectorAll('.cell_output pre, .output pre')) {
  const t = (cell.innerText || '').trimStart();
  if (/^[A-Za-z]*(Error|Exception): /m.test(t) && /^\s*File "|^Cell In\[|----> \d/m.test(t)) problems.push('error text in an output: ' + t.slice(0, 160));
}
if (!document.querySelector('main, article, .bd-article')) problems.push('no article body');
return problems;
"""


def required() -> bool:
    return os.environ.get(REQUIRED_ENV, "").lower() in ("1", "required", "true", "yes")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the book quietly and records every request it could not answer."""

    missing: list[str] = []

    def log_message(self, *args) -> None:  # one line per request would bury the report
        pass

    def send_error(self, code, message=None, explain=None) -> None:
        if self.path.split("?")[0] != "/favicon.ico":  # browsers ask for it; Sphinx ships none
            self.missing.append(f"{code} {self.path}")
        super().send_error(code, message, explain)


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    return serve_dir(directory, _Handler)


def book_pages(html_dir: Path) -> list[Path]:
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    return sorted(p for p in html_dir.rglob("*.html")
                  if p.name not in skip and "_static" not in p.parts and "_sources" not in p.parts)


def _wait_loaded(drv, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = drv.execute_script(
            "return [document.readyState, Array.from(document.images).every(i => i.complete),"
            " !window.MathJax || !MathJax.startup || !MathJax.startup.promise ? 'na' : 'mj']")
        if state[0] == "complete" and state[1]:
            break
        time.sleep(0.1)
    if state[2] == "mj":  # wait for MathJax to typeset, so the screenshot shows the maths
        drv.execute_async_script("const done = arguments[arguments.length - 1];"
                                 "MathJax.startup.promise.then(() => done(true), () => done(false));")


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def check(html_dir: Path = HTML_DIR, shot_dir: Path | None = None) -> int:
    """Check every page under `html_dir`; screenshots go to `shot_dir` (default: beside html/)."""
    shot_dir = shot_dir or html_dir.parent / "screenshots"
    browser, driver_path = find_chromium()
    if browser is None or driver_path is None:
        missing = "chromium" if browser is None else "chromium-driver"
        if required():
            print(f"browser check: FAILED ({missing} not installed and {REQUIRED_ENV}=required)")
            return 1
        print(f"browser check: skipped ({missing} not installed)")
        return 0
    pages = book_pages(html_dir)
    if not pages:
        print(f"browser check: FAILED (no HTML pages in {html_dir}; build the book first)")
        return 1
    shutil.rmtree(shot_dir, ignore_errors=True)
    shot_dir.mkdir(parents=True)
    server, base = serve(html_dir)
    failures: dict[str, list[str]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile_dir:
        drv = chromium_driver(browser, driver_path, profile_dir, CHROMIUM_FLAGS)
        try:
            drv.set_script_timeout(30)
            drv.set_page_load_timeout(60)
            for page in pages:
                rel = page.relative_to(html_dir).as_posix()
                drv.set_window_size(PAGE_WIDTH, 1024)
                drv.get(f"{base}/{rel}")
                _wait_loaded(drv)
                problems = list(drv.execute_script(PAGE_PROBE))
                problems += [f"resource not served: {m}" for m in _Handler.missing]
                _Handler.missing.clear()
                height = int(drv.execute_script("return Math.ceil(document.documentElement.scrollHeight)"))
                drv.set_window_size(PAGE_WIDTH, min(max(height, 600), MAX_PAGE_HEIGHT))
                shot = shot_dir / (rel.replace("/", "__").removesuffix(".html") + ".png")
                drv.save_screenshot(str(shot))
                status = "ok" if not problems else f"{len(problems)} problem(s)"
                print(f"browser check: {rel}: {status} (screenshot {_shown(shot)})")
                for p in problems:
                    print(f"    - {p}")
                if problems:
                    failures[rel] = problems
        finally:
            drv.quit()
            server.shutdown()
    seconds = time.perf_counter() - start
    if failures:
        print(f"browser check: FAILED: {len(failures)} of {len(pages)} pages have problems ({seconds:.1f} s)")
        return 1
    print(f"browser check: {len(pages)} pages ok, screenshots in {_shown(shot_dir)} ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(check(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HTML_DIR))
