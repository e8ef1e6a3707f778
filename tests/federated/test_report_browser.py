"""The page of ``fedmoe report`` opened in a real browser: headless Chromium loads it from the file system (no
server), its DOM after loading holds the tables and images, the images decode (plot colours on the screenshot),
and an injected ``<script>`` in the configuration stays text.

Chromium is required, not optional: without it the test fails and says how to install it (``.ci/run``
installs Debian's ``chromium`` when it is missing).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedmoe.federated.html_report import write_report
from tests.federated.test_html_report import INJECTED, Page

TIMEOUT_S = 90.0
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--window-size=1200,2400")
ORANGE = np.array([255, 127, 14])  # matplotlib's tab:orange: the energy bars of the page's plots


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is needed to check that the report renders and none was found on PATH: install "
                "it (Debian/Ubuntu: sudo apt-get install -y chromium; .ci/run does so when it is missing)")


def run_chromium(args: list[str], profile: Path) -> str:
    """Chromium with ``args`` in a process group of its own; stdout. Killed by its PID (group) after
    :data:`TIMEOUT_S` or when done, so that no helper process of it stays."""
    proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {TIMEOUT_S:.0f} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its helpers (same group), if any outlived it
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    return out


@pytest.fixture(scope="module")
def page_file(watched_run, tmp_path_factory) -> Path:
    """The report of the watched run, with ``<script>`` injected into its configuration's name."""
    out = watched_run[0]
    folder = tmp_path_factory.mktemp("browsed")
    for name in ("rounds.csv", "devices.csv", "metrics.json"):
        shutil.copy(out / name, folder / name)
    config = json.loads((out / "config.json").read_text())
    config["name"] = INJECTED
    (folder / "config.json").write_text(json.dumps(config))
    return write_report(folder)


def test_chromium_builds_the_tables_and_images_and_runs_nothing(page_file, tmp_path):
    dom = run_chromium(["--dump-dom", page_file.resolve().as_uri()], tmp_path / "profile")
    page = Page(dom)
    assert page.rows["summary"] >= 10 and page.rows["rounds"] == 1 + 3 and page.rows["devices"] == 1 + 4
    assert page.rows["expert-usage"] >= 2
    assert len(page.named("img")) == 5
    assert not page.named("script")  # the injected one stayed text
    assert "&lt;script&gt;" in dom


def test_chromium_screenshot_shows_the_plots(page_file, tmp_path):
    from PIL import Image

    shot = tmp_path / "page.png"
    run_chromium([f"--screenshot={shot}", page_file.resolve().as_uri()], tmp_path / "profile")
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.int64)
    assert pixels.shape[:2] == (2400, 1200)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # not a blank page
    # the energy bars are drawn in the plots only: the images were decoded and shown
    orange = (np.abs(pixels - ORANGE).sum(axis=2) < 30).sum()
    assert orange > 2000, f"{orange} pixels of the plots' orange"
