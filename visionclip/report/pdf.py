"""The whole book as one PDF, printed offline from the built HTML by Debian's Chromium.

Jupyter Book 1's own PDF builders download a browser at run time (pyppeteer) or need a CJK-capable
TeX; Chromium is already what the browser check drives. Each page of book/_toc.yml is loaded from a
local HTTP server (MathJax loads its fonts and components the way a reader's browser does), printed
once MathJax has typeset and every image and font has loaded, and the pages are merged in toc order
with one bookmark per page.
"""
from __future__ import annotations

import base64
import functools
import http.server
import io
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

import yaml

from ..errors import VisionCLIPError
from ..io import write_bytes

PDF_NAME = "visionclip-book.pdf"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-quic", "--disable-dev-shm-usage", "--disable-default-apps",
                  "--disable-extensions", "--window-size=1100,1400"]
# A4 with 12 mm margins; backgrounds kept (admonitions, table stripes, greyed rows).
PRINT_OPTIONS = {"paperWidth": 8.27, "paperHeight": 11.69, "marginTop": 0.47, "marginBottom": 0.47,
                 "marginLeft": 0.47, "marginRight": 0.47, "printBackground": True, "preferCSSPageSize": False}
# Only the article goes on paper: the theme's navigation, sidebars and buttons are for the screen.
PRINT_CSS = """
.bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .bd-header-article, .header-article-items,
.prev-next-area, .bd-footer, .bd-footer-content, .bd-footer-article, #pst-back-to-top,
.skip-link, .search-button, .theme-switch-button, .headerlink, .bd-search { display: none !important; }
.bd-main .bd-content .bd-article-container, .bd-page-width, .bd-content { max-width: 100% !important; }
img { max-width: 100% !important; page-break-inside: avoid; }
/* paper does not scroll: long code lines and printed output wrap instead of being cut off */
pre { white-space: pre-wrap !important; overflow-wrap: anywhere; overflow: visible !important; }
.cell_output, .output, .highlight, .table-wrapper, .pst-scrollable-table-container { overflow: visible !important; }
div.cell, table { page-break-inside: auto; }
"""
# Resolves when the page is ready for print: loaded, images decoded, fonts in, MathJax typeset.
READY = r"""
const done = arguments[arguments.length - 1];
const style = document.createElement('style'); style.textContent = arguments[0]; document.head.appendChild(style);
const imgs = Array.from(document.images).map(i => i.complete ? Promise.resolve() : new Promise(r => { i.onload = i.onerror = r; }));
const mj = (window.MathJax && MathJax.startup && MathJax.startup.promise) ? MathJax.startup.promise : Promise.resolve();
Promise.all([...imgs, mj, document.fonts ? document.fonts.ready : Promise.resolve()])
  .then(() => done(document.querySelectorAll('mjx-container').length), () => done(-1));
"""


def toc_files(book_dir: Path) -> list[str]:
    """The book's documents in reading order: the root, then every `file` of book/_toc.yml."""
    toc = yaml.safe_load((Path(book_dir) / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(node) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                files.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [str(Path(f).with_suffix("")) for f in files]


def find_chromium() -> tuple[str | None, str | None]:
    browser = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser"))
                    if p and Path(p).exists()), None)
    driver = next((p for p in (shutil.which("chromedriver"), "/usr/bin/chromedriver") if p and Path(p).exists()), None)
    return browser, driver


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # the browser closing a socket early
        pass


def serve(directory: Path, handler: type[http.server.SimpleHTTPRequestHandler] = _Quiet
          ) -> tuple[http.server.ThreadingHTTPServer, str]:
    """`directory` served from 127.0.0.1 (a free port) by a thread, as a reader's browser loads it;
    (the server, to shut down; its base URL). Also tests/browser_check.py's."""
    server = _Server(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def chromium_driver(browser: str, driver_path: str, profile_dir: str, flags: Sequence[str] = CHROMIUM_FLAGS):
    """Selenium's Chrome driver on `browser` with `flags` (no network features) and a profile of its
    own. Also tests/browser_check.py's."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in [*flags, f"--user-data-dir={profile_dir}"]:
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager (which would download drivers) is never asked.
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def print_book(html_dir: Path, book_dir: Path, out: Path | None = None,
               pages: Sequence[str] | None = None) -> Path:
    """Print the built book (html_dir) to one PDF (default html_dir/visionclip-book.pdf)."""
    from pypdf import PdfReader, PdfWriter

    html_dir, out = Path(html_dir), Path(out or Path(html_dir) / PDF_NAME)
    browser, driver_path = find_chromium()
    if browser is None or driver_path is None:
        raise VisionCLIPError("the PDF is printed with Chromium: install chromium and chromium-driver "
                              "(Debian: apt-get install chromium chromium-driver, or `make os-deps`)")
    docs = [d for d in (pages or toc_files(book_dir)) if (html_dir / f"{d}.html").exists()]
    if not docs:
        raise VisionCLIPError(f"no built page of {book_dir / '_toc.yml'} in {html_dir}: build the HTML first")
    server, base = serve(html_dir)
    writer = PdfWriter()
    try:
        with tempfile.TemporaryDirectory(prefix="chromium-pdf-") as profile_dir:
            drv = chromium_driver(browser, driver_path, profile_dir)
            try:
                drv.set_script_timeout(60)
                drv.set_page_load_timeout(60)
                for doc in docs:
                    drv.get(f"{base}/{doc}.html")
                    if drv.execute_async_script(READY, PRINT_CSS) < 0:
                        raise VisionCLIPError(f"{doc}.html: MathJax failed to typeset; the PDF would show raw TeX")
                    data = base64.b64decode(drv.execute_cdp_cmd("Page.printToPDF", PRINT_OPTIONS)["data"])
                    first = len(writer.pages)
                    writer.append(PdfReader(io.BytesIO(data)))
                    title = drv.title.split("—")[0].split(" - ")[0].strip() or doc
                    writer.add_outline_item(title, first)
            finally:
                drv.quit()
    finally:
        server.shutdown()
    writer.add_metadata({"/Title": "VisionCLIP, rebuilt", "/Creator": "visionclip.report.pdf (Chromium)"})
    buf = io.BytesIO()
    writer.write(buf)
    write_bytes(out, buf.getvalue())
    out.chmod(0o644)  # a page of the book like the others (the atomic write leaves it private)
    return out


def timed_print(html_dir: Path, book_dir: Path) -> tuple[Path, float, int]:
    """print_book, with its wall seconds and page count (what the pipeline reports)."""
    from pypdf import PdfReader

    start = time.perf_counter()
    out = print_book(html_dir, book_dir)
    return out, time.perf_counter() - start, len(PdfReader(out).pages)
