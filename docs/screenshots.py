"""Screenshots of the MLflow UI for the README (how docs/*.png were made).

Starts ``mlflow ui`` on the project's store (or ``--store``) on localhost, takes headless
Chromium (Debian's ``chromium`` package, driven by Playwright: ``pip install -e '.[screenshots]'``) screenshots of the experiment's runs table and of the
compare view of the two most recent ``train`` runs, and stops the server. Nothing leaves the
machine: the server listens on 127.0.0.1 and Chromium runs with background networking off.

    .venv/bin/python docs/screenshots.py [--store mlruns/mlflow.db] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PORT = 5057
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def screenshot(url: str, path: Path, size: tuple[int, int], wait_ms: int = 12000, scroll_to: str | None = None) -> None:
    """A PNG of ``url`` after the page has rendered, with MLflow's assistant panel closed."""
    from playwright.sync_api import sync_playwright  # pip install -e '.[screenshots]'

    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=list(CHROMIUM_FLAGS[1:]))
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        page.goto(url)
        page.wait_for_timeout(wait_ms)
        for label in ("Close", "close"):
            button = page.locator(f"button[aria-label='{label}']")
            if button.count():
                button.first.click()
                page.wait_for_timeout(1500)
                break
        if scroll_to is not None:  # e.g. the compare view's metrics table, below its plots
            page.get_by_text(scroll_to, exact=True).first.scroll_into_view_if_needed()
            page.evaluate("window.scrollBy(0, -20)")
            page.wait_for_timeout(1000)
        page.screenshot(path=str(path))
        browser.close()
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=REPO / "mlruns" / "mlflow.db")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--experiment", default="crlm-prognosis")
    args = parser.parse_args()
    uri = f"sqlite:///{args.store.resolve()}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(args.experiment)
    runs = client.search_runs(
        [experiment.experiment_id],
        "tags.mlflow.runName = 'train'",
        order_by=["attributes.start_time DESC"],
        max_results=2,
    )
    if len(runs) < 2:
        raise SystemExit(f"need two train runs in {args.store}, found {len(runs)}")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(PORT)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{PORT}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        ids = [r.info.run_id for r in runs]
        table = f"{base}/#/experiments/{experiment.experiment_id}/runs"
        compare = (
            f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
            f"&experiments={urllib.parse.quote(json.dumps([experiment.experiment_id]))}"
        )
        screenshot(table, args.out / "mlflow_runs_table.png", (1500, 520))
        screenshot(compare, args.out / "mlflow_compare.png", (1500, 1100))
        screenshot(compare, args.out / "mlflow_compare_metrics.png", (1500, 900), scroll_to="Metrics")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
