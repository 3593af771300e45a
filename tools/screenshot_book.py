"""Look at the built book in a real browser: headless Chromium loads pages, checks them, saves screenshots.

    python tools/screenshot_book.py [--book book/_build/html] [--out screenshots] [--chromium /usr/bin/chromium]
                                    [--width 1280]   # 390: a phone

For each page (every chapter by default) it reports the title, the viewport and the page's own width (wider: the page
scrolls sideways), the page height at the viewport width (1280 px by default), the number of images and
how many of them loaded (complete with a non-zero natural width), how many are SVG and the smallest ratio of an image's
natural to displayed width (>= 2 is "2x DPI"), whether MathJax typeset any formula, the text of the one-minute box and of the key findings,
the text column's width and the widest table or figure in it (`too_wide` lists what passes the column), the figures
and how many lack a caption, images outside a numbered figure, `nan` text, whether the page has a "This run" box,
the tables and images whose label is not "Table N" / "Fig. N", the smallest figure text as displayed
(`min_figure_text_px`, from each SVG's text sizes and its shown width), and saves a PNG. Prints one JSON object;
exits non-zero if a page has no title or an image failed to load.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
DEFAULT_PAGES = ["index.html"] + [f"notebooks/{p.stem}.html" for p in sorted(NOTEBOOKS.glob("0*.md"))]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def min_figure_text_px(images: list[dict]) -> float | None:
    """The smallest text on the page's SVG figures in CSS px as displayed: each text size scaled by the image's shown
    width over its drawing width. None when the page has no SVG figure."""
    from congkit.study.plots import svg_text_sizes

    shown = []
    for image in images:
        path = Path(unquote(urlparse(image["src"]).path))
        if path.exists() and image["width"] > 0:
            width, sizes = svg_text_sizes(path.read_text())
            shown += [size * image["width"] / width for size in sizes]
    return round(min(shown), 2) if shown else None


def check_pages(book: Path, out: Path, pages: list[str], chromium: str, width: int = 1280) -> dict:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    report = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": width, "height": 900})
        for name in pages:
            page.goto((book / name).resolve().as_uri(), wait_until="load")
            page.wait_for_timeout(1500)  # MathJax typesets after load
            info = page.evaluate(
                """() => ({
                    title: document.title,
                    viewport: window.innerWidth,
                    page_width: document.documentElement.scrollWidth,
                    h1: (document.querySelector('h1') || {}).textContent || '',
                    images: document.images.length,
                    loaded: Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length,
                    mathjax: document.querySelectorAll('mjx-container').length,
                    height: document.documentElement.scrollHeight,
                    svg: Array.from(document.images).filter(i => i.src.startsWith('data:image/svg') ||
                                                                i.src.endsWith('.svg')).length,
                    min_raster_scale: Math.min(...Array.from(document.images)
                        .filter(i => !(i.src.startsWith('data:image/svg') || i.src.endsWith('.svg')) && i.width > 0)
                        .map(i => i.naturalWidth / i.width), 1e9),
                    summary: (document.querySelector('.admonition.important') || {}).innerText || '',
                    findings: (document.querySelector('#key-findings') || {}).innerText || '',
                    text: document.body.innerText,
                    ...(() => {
                        const article = document.querySelector('article.bd-article') || document.querySelector('main')
                            || document.body;
                        const column = article.getBoundingClientRect().width;
                        const boxed = e => {  // inside a box that scrolls sideways and fits the column
                            for (let a = e.parentElement; a && a !== article; a = a.parentElement) {
                                const x = getComputedStyle(a).overflowX;
                                if ((x === 'auto' || x === 'scroll') && a.getBoundingClientRect().width <= column + 1)
                                    return true;
                            }
                            return false;
                        };
                        const number = e => {  // the "Table N" / "Fig. N" that labels a table or an image
                            const own = e.tagName === 'TABLE' && e.querySelector(':scope > caption .caption-number');
                            const fig = e.closest('figure');
                            const label = own || (fig && fig.querySelector(':scope > figcaption .caption-number'));
                            return label ? label.textContent.trim() : '';
                        };
                        const tables = Array.from(article.querySelectorAll('table'))
                            .filter(t => !t.closest('mjx-container') && !t.parentElement.closest('table'));
                        const plots = Array.from(article.querySelectorAll('img'));
                        const wide = Array.from(article.querySelectorAll('table, img, svg, figure'))
                            .filter(e => !e.closest('mjx-container') && !boxed(e))
                            .map(e => ({tag: e.tagName, width: Math.round(e.getBoundingClientRect().width),
                                        text: (e.innerText || e.getAttribute('alt') || '').slice(0, 60)}));
                        const figures = Array.from(article.querySelectorAll('figure'));
                        return {
                            column: Math.round(column),
                            widest: Math.max(0, ...wide.map(w => w.width)),
                            too_wide: wide.filter(w => w.width > column + 1),
                            figures: figures.length,
                            uncaptioned: figures.filter(f => !f.querySelector('figcaption')).length,
                            loose_images: Array.from(article.querySelectorAll('img'))
                                .filter(i => !i.closest('figure')).length,
                            nan: /\bnan\b/i.test(article.innerText),
                            this_run: article.querySelectorAll('.this-run').length,
                            tables: tables.length,
                            tables_not_numbered_as_tables: tables.map(number).filter(n => !n.startsWith('Table ')),
                            figures_not_numbered_as_figures: plots.map(number).filter(n => !n.startsWith('Fig. ')),
                            svg_images: plots.filter(i => i.src.endsWith('.svg'))
                                .map(i => ({src: i.src, width: i.getBoundingClientRect().width})),
                        };
                    })(),
                })"""
            )
            info["min_figure_text_px"] = min_figure_text_px(info.pop("svg_images"))
            shot = out / (name.replace("/", "_").replace(".html", ".png"))
            page.screenshot(path=str(shot), full_page=False)
            info["screenshot"] = str(shot)
            report[name] = info
        browser.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--book", default="book/_build/html")
    parser.add_argument("--out", default="screenshots")
    parser.add_argument("--chromium", default=None)
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS px (a phone: 390)")
    parser.add_argument("pages", nargs="*", default=DEFAULT_PAGES)
    args = parser.parse_args()
    chromium = args.chromium or find_chromium()
    if chromium is None:
        sys.exit("no Chromium found: install Debian's chromium package")
    report = check_pages(Path(args.book), Path(args.out), args.pages, chromium, args.width)
    print(json.dumps(report, indent=2))
    bad = [n for n, r in report.items() if not r["title"] or r["loaded"] < r["images"]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
