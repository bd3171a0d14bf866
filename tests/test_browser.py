"""The reports checked in a real browser (issue 12, item 6).

Every report of a run (and the index) is opened in headless Chromium (Debian's ``chromium``;
installed with apt-get when missing, else the test is skipped with the reason) at 1280 px, and
the page must have no horizontal overflow, every image a non-zero size, no ``<pre>`` block of
more than 3 lines in an output cell and no Python repr (``{'``, ``Timestamp(``) in its text.
A screenshot of each page is saved under ``reports/screenshots/`` (git-ignored) for a person
to look at.

The reports checked are those of ``make reports`` in ``reports/`` when that run is complete
and newer than the notebooks and the package (so ``make reports && make test`` renders them
only once); otherwise the fixture runs ``cxanalysis report`` on the demo data into a
temporary folder.

Measuring needs no driver: a small script is appended to a copy of each page; on ``load`` it
writes its measurements into the DOM, which ``chromium --headless --dump-dom`` prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
REPORTS = ROOT / "reports"
SHOTS = REPORTS / "screenshots"
WIDTH = 1280
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

#: Appended to a copy of each page: measures the laid-out page and writes the figures into
#: a JSON script element ("<" escaped so that no text can end the element early).
MEASURE = """
<script>
window.addEventListener('load', () => {
  const de = document.documentElement;
  const outs = document.querySelectorAll(
    '.jp-OutputArea-output pre, .output_area pre, .output_subarea pre');
  const r = {
    innerWidth: window.innerWidth,
    scrollWidth: Math.max(de.scrollWidth, document.body.scrollWidth),
    wide: [...document.body.querySelectorAll('*')]
      .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
      .slice(0, 5).map(e => e.tagName + '.' + e.className),
    images: [...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight,
      rw: i.getBoundingClientRect().width, rh: i.getBoundingClientRect().height})),
    pres: [...outs].map(p => p.innerText.replace(/\\n+$/, '').split('\\n').length),
    preHeads: [...outs].map(p => p.innerText.slice(0, 80)),
    text: document.body.innerText,
  };
  const el = document.createElement('script');
  el.type = 'application/json';
  el.id = 'cx-measure';
  el.textContent = JSON.stringify(r).replace(/</g, '\\\\u003c');
  document.body.appendChild(el);
});
</script>
"""


def _chromium() -> str:
    """The chromium binary; installed with apt-get when missing (skip when impossible)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CXANALYSIS_NO_APT"):
        pytest.skip("chromium is not installed and CXANALYSIS_NO_APT is set")
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be installed here (needs apt-get "
                    "as root): apt-get install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True,
                       timeout=600, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True,
                       capture_output=True, timeout=900, env=env)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"chromium is not installed and apt-get could not install it: {exc}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get ran but no chromium binary was found")
    return found


def _browser_args(chromium: str) -> list[str]:
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--disable-extensions", "--mute-audio",
            f"--window-size={WIDTH},900", "--virtual-time-budget=10000"]


def _current_reports(folder: Path) -> bool:
    """Whether ``folder`` holds a complete run of every notebook that is newer than the
    notebooks and the package source (then it need not be rendered again)."""
    try:
        manifest = json.loads((folder / "cxanalysis-run.json").read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("state") != "complete" or sorted(manifest.get("notebooks") or []) \
            != NOTEBOOKS:
        return False
    pages = [folder / f"{n}.html" for n in NOTEBOOKS]
    if not all(p.is_file() for p in pages):
        return False
    sources = [*(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "src").rglob("*.py")]
    newest_source = max(p.stat().st_mtime for p in sources)
    return min(p.stat().st_mtime for p in pages) > newest_source


@pytest.fixture(scope="module")
def chromium() -> str:
    return _chromium()


@pytest.fixture(scope="module")
def report_dir(chromium, tmp_path_factory) -> Path:
    if _current_reports(REPORTS):
        return REPORTS
    if not (DEMO / "customers.parquet").exists():
        pytest.skip("no demo data (make demo) and no current reports (make reports)")
    out = tmp_path_factory.mktemp("reports")
    exe = Path(sys.executable).with_name("cxanalysis")
    proc = subprocess.run([str(exe), "report", "--source", str(DEMO), "--out", str(out)],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def measure(chromium: str, page: Path, tmp: Path) -> dict:
    """Open ``page`` at 1280 px and return what :data:`MEASURE` found."""
    page = page.resolve()
    text = page.read_text(encoding="utf-8")
    probe = page.with_name(f".{page.stem}.probe.html")  # beside it: relative links work
    probe.write_text(text.replace("</body>", MEASURE + "</body>", 1)
                     if "</body>" in text else text + MEASURE, encoding="utf-8")
    try:
        proc = subprocess.run([*_browser_args(chromium), "--dump-dom", probe.as_uri()],
                              capture_output=True, text=True, timeout=180)
    finally:
        probe.unlink(missing_ok=True)
    m = re.search(r'<script type="application/json" id="cx-measure">(.*?)</script>',
                  proc.stdout, re.S)
    assert m, f"{page.name}: the browser produced no measurement: {proc.stderr[-2000:]}"
    return json.loads(m.group(1))


def screenshot(chromium: str, page: Path, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{name}.png"
    page = page.resolve()
    args = [a if not a.startswith("--window-size") else f"--window-size={WIDTH},1600"
            for a in _browser_args(chromium)]
    subprocess.run([*args, f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=180)
    return shot


def problems(name: str, m: dict) -> list[str]:
    """What is wrong with a measured page (empty when it reads well)."""
    found = []
    if m["scrollWidth"] > m["innerWidth"] + 1:
        found.append(f"{name}: the page is {m['scrollWidth']} px wide at {m['innerWidth']} px "
                     f"(wider elements: {m['wide']})")
    for i, img in enumerate(m["images"]):
        if not (img["w"] > 0 and img["h"] > 0 and img["rw"] > 0 and img["rh"] > 0):
            found.append(f"{name}: image {i} has no size: {img}")
    for lines, head in zip(m["pres"], m["preHeads"], strict=True):
        if lines > 3:
            found.append(f"{name}: a <pre> output of {lines} lines: {head!r}")
    for repr_mark in ("{'", "Timestamp("):
        if repr_mark in m["text"]:
            at = m["text"].index(repr_mark)
            found.append(f"{name}: Python repr {repr_mark!r} in the text: "
                         f"{m['text'][max(0, at - 40):at + 40]!r}")
    return found


def test_measure_flags_what_reads_badly(chromium, tmp_path):
    """The checks can fail: a hand-made page with every defect is flagged for each."""
    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAA"
           "AABJRU5ErkJggg==")
    page = tmp_path / "bad.html"
    page.write_text(
        "<html><body><div style='width:2000px'>wide</div>"
        f"<img src='data:image/png;base64,{png}' width='0'>"
        "<div class='jp-OutputArea-output'><pre>a\nb\nc\nd</pre></div>"
        "<p>{'k': Timestamp('2025-01-01')}</p></body></html>")
    found = " | ".join(problems("bad", measure(chromium, page, tmp_path)))
    assert "the page is 20" in found
    assert "image 0 has no size" in found
    assert "a <pre> output of 4 lines" in found
    assert "Python repr \"{'\"" in found and "Timestamp(" in found
    good = tmp_path / "good.html"
    good.write_text(f"<html><body><img src='data:image/png;base64,{png}' width='10'>"
                    "<div class='jp-OutputArea-output'><pre>one line</pre></div>"
                    "<div style='overflow-x:auto'><div style='width:3000px'>x</div></div>"
                    "</body></html>")
    assert problems("good", measure(chromium, good, tmp_path)) == []


@pytest.mark.parametrize("name", [*NOTEBOOKS, "index"])
def test_report_reads_well_in_a_browser(chromium, report_dir, tmp_path, name):
    page = report_dir / f"{name}.html"
    assert page.is_file(), f"no {page}"
    m = measure(chromium, page, tmp_path)
    shot = screenshot(chromium, page, name)
    assert shot.is_file() and shot.stat().st_size > 0
    if name != "index":
        assert m["images"], f"{name}: no figure at all"
    assert problems(name, m) == []
