"""book/check_book.py finds missing chapters, broken links and missing images in a built book."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_checker():
    spec = importlib.util.spec_from_file_location("check_book", ROOT / "book" / "check_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checker_reports_broken_links_images_and_missing_chapters(tmp_path):
    checker = load_checker()
    checker.CHAPTERS = ["00_intro", "01_next"]
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "fig.png").write_bytes(b"\x89PNG")
    body = "x" * 2500
    (tmp_path / "index.html").write_text('<a href="notebooks/00_intro.html#top">go</a>')
    (tmp_path / "notebooks" / "00_intro.html").write_text(
        f'<h1 id="top">t</h1><p>{body}</p><img src="../fig.png">'
        '<a href="01_next.html">next</a><a href="missing.html">x</a><img src="gone.png">'
        '<a href="#nowhere">y</a><a href="https://example.org/">ext</a>'
    )
    problems = checker.check(tmp_path)
    assert any("missing chapter page notebooks/01_next.html" in p for p in problems)
    assert any("broken link missing.html" in p for p in problems)
    assert any("broken image gone.png" in p for p in problems)
    assert any("no #nowhere" in p for p in problems)
    assert not any("example.org" in p or "#top" in p or "fig.png" in p for p in problems)


def test_headless_render_flags_a_blank_chapter_page(tmp_path):
    import shutil

    import pytest

    checker = load_checker()
    assert checker.find_browser("none") is None
    browser = checker.find_browser("auto")
    if browser is None:
        pytest.skip("no headless Chromium/Chrome installed")
    checker.CHAPTERS = ["00_full", "01_blank"]
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "docs" / "demo_ranking_bpbreid.png", tmp_path / "fig.png")
    words = " ".join(f"word{i}" for i in range(1500))
    (tmp_path / "notebooks" / "00_full.html").write_text(
        f'<html><body><h1>Chapter</h1><p>{words}</p><img src="../fig.png"></body></html>'
    )
    # A formula without MathJax on the page: left as raw TeX.
    (tmp_path / "notebooks" / "01_blank.html").write_text(
        '<html><body><span class="math notranslate nohighlight">\\(x^2\\)</span></body></html>'
    )
    problems = checker.render(tmp_path, browser)
    assert not [p for p in problems if "00_full" in p], problems
    assert any("01_blank.html: no figure" in p for p in problems)
    assert any("01_blank.html: the rendered page looks blank" in p for p in problems)
    assert any("01_blank.html: its formulas were not typeset" in p for p in problems)
