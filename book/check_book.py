"""Check the built course book: every chapter page exists and has content, local links and
images resolve, figures are present.

Usage: ``python book/check_book.py [book/_build/html]`` (``make book`` runs it). The file checks are
pure Python (an HTML parser over the files), so they run offline anywhere. When a Chromium or Chrome
is installed (``--browser auto``, the default; ``--browser none`` skips it), every chapter page is
also rendered in the headless browser: the page must load, its rendered DOM must keep the chapter's
figures and have its formulas typeset (MathJax, served from the book itself), and a screenshot of
it must not be blank. Exit code 1 lists every problem.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHAPTERS = sorted(
    p.stem for p in (Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb")
)


class Page(HTMLParser):
    """Collects links, image sources, element ids and the amount of text of one page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()
        self.text = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        if tag == "img" and values.get("src"):
            self.images.append(values["src"])

    def handle_data(self, data: str) -> None:
        self.text += len(data.strip())


def local_target(page: Path, ref: str) -> tuple[Path | None, str]:
    """The file a relative link points to (None for external links) and its fragment."""
    parts = urlsplit(ref)
    if parts.scheme or parts.netloc or ref.startswith(("mailto:", "javascript:", "data:")):
        return None, ""
    if not parts.path:
        return page, parts.fragment
    return (page.parent / unquote(parts.path)).resolve(), parts.fragment


def check(html_dir: Path) -> list[str]:
    problems: list[str] = []
    pages = {p.resolve(): Page() for p in html_dir.rglob("*.html")}
    for path, parser in pages.items():
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    for stem in CHAPTERS:
        page = (html_dir / "notebooks" / f"{stem}.html").resolve()
        if page not in pages:
            problems.append(f"missing chapter page notebooks/{stem}.html")
            continue
        if pages[page].text < 2000:
            problems.append(f"notebooks/{stem}.html has almost no text ({pages[page].text} chars)")
        if not pages[page].images:
            problems.append(f"notebooks/{stem}.html shows no figure")
    for path, parser in pages.items():
        if "_static" in path.parts or "_sources" in path.parts:
            continue
        name = path.relative_to(html_dir.resolve())
        for kind, refs in (("link", parser.links), ("image", parser.images)):
            for ref in refs:
                target, fragment = local_target(path, ref)
                if target is None:
                    continue
                if not target.exists():
                    problems.append(f"{name}: broken {kind} {ref}")
                elif kind == "link" and fragment and target in pages:
                    if fragment not in pages[target].ids:
                        problems.append(f"{name}: link {ref}: no #{fragment} in the target page")
                elif kind == "image" and target.stat().st_size == 0:
                    problems.append(f"{name}: empty image {ref}")
    return problems


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
# What MathJax leaves in the DOM once it has typeset a formula (HTML-CSS / SVG / CHTML output).
TYPESET_MARKS = ('class="mi"', 'class="mn"', "MathJax_SVG", "mjx-")
# A screenshot of a blank page compresses to a few kB; a page of text and figures to far more.
MIN_SCREENSHOT_BYTES = 20_000


def find_browser(choice: str = "auto") -> str | None:
    """The headless browser to render with: a path, ``auto`` (first on PATH) or ``none``."""
    if choice == "none":
        return None
    if choice != "auto":
        return choice
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def render(html_dir: Path, browser: str, timeout: float = 90.0) -> list[str]:
    """Render every chapter page in the headless browser; problems found."""
    problems: list[str] = []
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    flags.append("--virtual-time-budget=3000")  # let the page's scripts run before the dump
    with tempfile.TemporaryDirectory() as scratch:
        for stem in CHAPTERS:
            page = (html_dir / "notebooks" / f"{stem}.html").resolve()
            if not page.is_file():
                continue  # reported by check()
            name = f"notebooks/{stem}.html"
            try:
                dom = subprocess.run(
                    [*flags, "--dump-dom", page.as_uri()],
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
                shot = Path(scratch) / f"{stem}.png"
                subprocess.run(
                    [*flags, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
                    capture_output=True,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                problems.append(f"{name}: the browser did not finish rendering in {timeout:.0f} s")
                continue
            if dom.returncode != 0 or "<body" not in dom.stdout:
                problems.append(f"{name}: the browser could not render it ({dom.stderr[-200:]})")
                continue
            rendered = Page()
            rendered.feed(dom.stdout)
            if not rendered.images:
                problems.append(f"{name}: no figure in the rendered page")
            has_math = 'class="math notranslate' in page.read_text(
                encoding="utf-8", errors="replace"
            )
            typeset = any(mark in dom.stdout for mark in TYPESET_MARKS)
            if has_math and not typeset:
                problems.append(f"{name}: its formulas were not typeset (MathJax did not run)")
            size = shot.stat().st_size if shot.is_file() else 0
            if size < MIN_SCREENSHOT_BYTES:
                problems.append(
                    f"{name}: the rendered page looks blank ({size} bytes of screenshot)"
                )
    return problems


def main(argv: list[str]) -> int:
    browser_choice = "auto"
    if "--browser" in argv:
        at = argv.index("--browser")
        browser_choice = argv[at + 1]
        argv = argv[:at] + argv[at + 2 :]
    html_dir = Path(argv[0] if argv else Path(__file__).parent / "_build" / "html")
    if not (html_dir / "index.html").is_file():
        print(f"{html_dir}/index.html not found: build the book first (make book).")
        return 1
    problems = check(html_dir)
    pages = len(list(html_dir.rglob("*.html")))
    browser = find_browser(browser_choice)
    if browser is not None:
        problems += render(html_dir, browser)
        rendered = f"; {len(CHAPTERS)} chapter pages rendered in {Path(browser).name} (headless)"
    else:
        rendered = "; no headless browser found (install chromium to render the pages too)"
    for problem in problems:
        print(problem)
    print(f"{pages} pages checked, {len(CHAPTERS)} chapters{rendered}: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
