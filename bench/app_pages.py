"""The app's pages on a real run, in Chromium: how long each page takes to settle, and memory
while paging through the harmful-images gallery.

    .venv/bin/python bench/app_pages.py --run-dir R [--rounds 3] [--gallery-pages 30] [--json]

R is a finished run with scores (e.g. the full Fashion-MNIST run of bench/scale.py, then
`retracer influence` for hydra, loss, combined, margin and `--method hydra --query class`).
The app is started (app/serve.py) with a fresh temporary workspace that holds R (a symlink, so
the landing page lists it and draws its training curves, as a user's own workspace would) and
whose current run is R, and Chromium (Debian's, through Playwright) clicks through every page in the sidebar's order,
`--rounds` times. A page has *settled* when its title is shown, no script is running (the status
widget has been gone for 250 ms), no spinner or skeleton is left, every plotly chart has drawn and
every image has loaded; the time is from the click to that moment. The landing page's first load (from
opening the URL) is timed too. Round 1 is the first visit after the server started (imports,
cached loads and the browser's first use of a widget's code included); later rounds are what a
user paging between pages waits for.

Then, when R has hydra's projected index (`retracer influencers --run-dir R --test-id ID` builds
it), Test sample's answer for a new image: `--picks` times, the misclassified grid is opened and the
next image's "Why?" pressed, timed until its influencers are shown and the page settled (each
image is scored against the index once; a repeat comes from the page's cache).

Then the gallery: "Top k" is set to 24 x `--gallery-pages` and the page number is stepped through
every page; after each, the resident memory of the server and of Chromium's processes and the
browser's JS heap are read. Memory is flat when the last page's figure is within a few MiB of
the first's (the slope per page is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.serve import start_app, stop_app  # noqa: E402
from engine.influence.featurestore import store_ready  # noqa: E402
from engine.workspace import set_current_run  # noqa: E402

CHROMIUM = os.environ.get("RETRACER_CHROMIUM", "/usr/bin/chromium")
# (sidebar label, the page's title)
PAGES = [
    ("Runs & training", "Retracer"),
    ("Influence", "Influence"),
    ("Harmful images", "Harmful images"),
    ("Class heatmap", "Class heatmap"),
    ("Test sample", "Test sample"),
    ("Embedding map", "Embedding map"),
    ("Check labels", "Check labels"),
    ("Retrain & compare", "Retrain & compare"),
    ("Export", "Export"),
]
# true when the script is not running, the page shows `title` (and `text`) in elements of this run,
# nothing is stale, and every spinner, chart and image is done
SETTLED_JS = """([title, text]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || ['running', 'rerunRequested', 'initial'].includes(app.dataset.testScriptState))
    return false;
  const fresh = e => !e.closest('[data-stale="true"]');
  if (![...document.querySelectorAll('h1')].some(
        e => fresh(e) && e.textContent.trim().startsWith(title))) return false;
  if (text && !document.body.innerText.includes(text)) return false;
  if (document.querySelector('[data-stale="true"]')) return false;
  if (document.querySelector('[data-testid="stSpinner"], [data-testid="stSkeleton"]')) return false;
  for (const c of document.querySelectorAll('[data-testid="stPlotlyChart"]'))
    if (!c.querySelector('.main-svg')) return false;
  for (const i of document.images) if (!i.complete) return false;
  return true;
}"""


def _ppid_map() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
                out[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return out


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def tree_rss_mb(root: int, *, name: str | None = None) -> float:
    """Resident MiB of `root`'s descendants (and `root` itself), optionally only those whose
    command name contains `name`."""
    parents = _ppid_map()
    tree, grew = {root}, True
    while grew:
        new = {p for p, pp in parents.items() if pp in tree} - tree
        grew = bool(new)
        tree |= new
    total = 0.0
    for pid in tree:
        if name is not None:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if name not in f.read():
                        continue
            except OSError:
                continue
        total += _rss_mb(pid)
    return total


def wait_settled(
    page: Any,
    title: str,
    *,
    text: str = "",
    t0: float | None = None,
    timeout_s: float = 120.0,
    quiet_s: float = 0.25,
) -> float:
    """Seconds from `t0` (default: now) until SETTLED_JS has held for `quiet_s` (the time it
    first held is returned)."""
    t0 = time.perf_counter() if t0 is None else t0
    since: float | None = None
    while True:
        now = time.perf_counter()
        if page.evaluate(SETTLED_JS, [title, text]):
            since = now if since is None else since
            if now - since >= quiet_s:
                return since - t0
        else:
            since = None
        if now - t0 > timeout_s:
            raise TimeoutError(f"page {title!r} did not settle within {timeout_s:.0f} s")
        page.wait_for_timeout(25)


def visit(page: Any, label: str, title: str) -> float:
    link = page.locator('[data-testid="stSidebarNav"] a').filter(has_text=label).first
    link.wait_for()
    t0 = time.perf_counter()
    link.click()
    return wait_settled(page, title, t0=t0)


def page_times(page: Any, rounds: int, only: list[str] | None = None) -> dict[str, list[float]]:
    """Visit every page (or those labelled in `only`) `rounds` times: seconds per visit."""
    pages = [(label, title) for label, title in PAGES if not only or label in only]
    times: dict[str, list[float]] = {label: [] for label, _ in pages}
    for r in range(rounds):
        for label, title in pages:
            times[label].append(visit(page, label, title))
            print(f"round {r + 1}  {label:<18} {times[label][-1]:6.2f} s", flush=True)
    return times


def pick_times(page: Any, n: int) -> list[float]:
    """Seconds from pressing "Why?" on the i-th misclassified test image (i = 2..n+1; the first
    is shown when the page opens) to its influencers shown, page settled."""
    visit(page, "Test sample", "Test sample")
    out = []
    for i in range(1, n + 1):
        why = page.locator('[data-testid="stButton"] button').filter(has_text="Why?")
        if not why.nth(i).is_visible():  # the grid folds away once an image was picked
            page.locator('[data-testid="stExpander"] summary').filter(
                has_text="Misclassified test images"
            ).first.click()
        why.nth(i).wait_for(state="visible")
        t0 = time.perf_counter()
        why.nth(i).click()
        out.append(wait_settled(page, "Test sample", text="Served from the projected index", t0=t0))
        print(f"test sample pick {i}  {out[-1]:5.2f} s", flush=True)
    return out


def gallery_memory(page: Any, server_pid: int, n_pages: int) -> list[dict[str, float]]:
    """Step the harmful gallery through `n_pages` pages; memory after each."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    cdp.send("HeapProfiler.enable")
    visit(page, "Harmful images", "Harmful images")
    topk = page.locator('input[aria-label="Top k"]').first
    topk.fill(str(24 * n_pages))
    topk.press("Enter")
    wait_settled(page, "Harmful images")
    rows = []
    for i in range(1, n_pages + 1):
        box = page.locator('input[aria-label^="Page (of"]').first
        t0 = time.perf_counter()
        box.fill(str(i))
        box.press("Enter")
        sec = wait_settled(page, "Harmful images", text=f"Showing {24 * (i - 1) + 1}–", t0=t0)
        cdp.send("HeapProfiler.collectGarbage")  # count what is retained, not garbage
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        rows.append(
            {
                "page": i,
                "seconds": sec,
                "server_mb": tree_rss_mb(server_pid),
                "chromium_mb": tree_rss_mb(os.getpid(), name="chrom"),
                "js_heap_mb": metrics.get("JSHeapUsedSize", 0.0) / 2**20,
                "dom_nodes": metrics.get("Nodes", 0.0),
            }
        )
        r = rows[-1]
        print(
            f"gallery page {i:3d}  {sec:5.2f} s  server {r['server_mb']:7.1f} MiB  chromium "
            f"{r['chromium_mb']:7.1f} MiB  JS heap {r['js_heap_mb']:6.1f} MiB  "
            f"{int(r['dom_nodes'])} nodes",
            flush=True,
        )
    return rows


def slope(rows: list[dict[str, float]], key: str) -> float:
    """Least-squares MiB per gallery page over the second half (after warm-up)."""
    half = rows[len(rows) // 2 :]
    if len(half) < 2:
        return 0.0
    xs = [r["page"] for r in half]
    ys = [r[key] for r in half]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def print_gallery(rows: list[dict[str, float]]) -> None:
    first, last = rows[0], rows[-1]
    for key in ("server_mb", "chromium_mb", "js_heap_mb"):
        print(
            f"{key:<12} page 1 {first[key]:7.1f}  page {last['page']} {last[key]:7.1f}  "
            f"slope {slope(rows, key):+.2f} MiB/page (second half)"
        )
    # page 1 is already shown when "Top k" is set: its "turn" changes nothing
    gallery_s = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
    print(
        f"gallery page turn: median {statistics.median(gallery_s):.2f} s, max {max(gallery_s):.2f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gallery-pages", type=int, default=30)
    ap.add_argument(
        "--picks", type=int, default=3, help="new test images to inspect on Test sample"
    )
    ap.add_argument(
        "--only", default="", help="comma-separated sidebar labels: visit only these pages"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    a = ap.parse_args()
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    unknown = sorted(set(only) - {label for label, _ in PAGES})
    if unknown:
        ap.error(
            f"--only: no page labelled {', '.join(unknown)}; labels: "
            + ", ".join(label for label, _ in PAGES)
        )
    from playwright.sync_api import sync_playwright

    run = a.run_dir.resolve()
    with tempfile.TemporaryDirectory(prefix="retracer-pages-") as tmp:
        ws = Path(tmp)
        (ws / run.name).symlink_to(run, target_is_directory=True)
        set_current_run(ws / run.name, workspace=ws)
        server = start_app(ws, log=ws / "streamlit.log")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
                page.set_default_timeout(120_000)
                t0 = time.perf_counter()
                page.goto(server.url)
                landing = wait_settled(page, "Retracer", t0=t0)
                print(f"landing page (first load)   {landing:6.2f} s", flush=True)
                times = page_times(page, a.rounds, only)
                picks: list[float] = []
                if a.picks > 0 and not store_ready(run, "hydra"):
                    print("no hydra index in the run: Test sample's picks not timed", flush=True)
                elif a.picks > 0:
                    picks = pick_times(page, a.picks)
                rows = (
                    gallery_memory(page, server.proc.pid, a.gallery_pages)
                    if a.gallery_pages > 0
                    else []
                )
                browser.close()
        finally:
            stop_app(server)
    print()
    print(f"landing page (first load): {landing:.2f}s")
    print(f"{'page':<18} {'first visit':>11} {'later (median)':>15} {'later (max)':>12}")
    for label, ts in times.items():
        later = ts[1:] or ts
        print(f"{label:<18} {ts[0]:10.2f}s {statistics.median(later):14.2f}s {max(later):11.2f}s")
    if picks:
        print(
            f"test sample, a new image's influencers: median {statistics.median(picks):.2f} s, "
            f"max {max(picks):.2f} s"
        )
    if rows:
        print_gallery(rows)
    if a.json:
        print(
            json.dumps(
                {
                    "run_dir": str(run),
                    "landing": landing,
                    "pages": times,
                    "picks": picks,
                    "gallery": rows,
                    "slopes": {
                        k: slope(rows, k) for k in ("server_mb", "chromium_mb", "js_heap_mb")
                    },
                }
            )
        )


if __name__ == "__main__":
    main()
