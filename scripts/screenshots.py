"""Screenshots of TensorBoard for docs/tensorboard.md, from a real run.

Trains the default run (`python train.py --run_dir=runs/screenshot-run`) when
that folder has no events yet, starts a local TensorBoard on it, drives
headless Chromium to the dashboards and saves, into `docs/images/`:

* `branch_norms.png`: the Custom Scalars "branch gradients" category, left /
  right / total gradient norm on one chart and cosine / sum_error on the
  other, legends open;
* `gradient_histograms.png`: the Histograms dashboard filtered to the shared
  LSTM kernel's left, right and total gradients.

Usage (from the repository root; not part of the test suite):

    apt-get install -y chromium chromium-driver   # Debian packages
    pip install selenium                          # optional, see below
    python scripts/screenshots.py [--run_dir=runs/screenshot-run] [--out=docs/images]

With selenium the script waits for the charts to be drawn, opens the chart
legends and crops each picture to its dashboard section. Without it, it
falls back to `chromium --screenshot` of the whole window (legends closed).
Chromium always runs with `--headless --no-sandbox --disable-gpu` and a
fresh profile. Exit status: 0 done, 1 a step failed (the message says which).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL = "siamese/encoder/lstm/lstm_cell/kernel"
HISTOGRAM_FILTER = f"gradients/(left|right|total)/{KERNEL}$"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")
MAX_PNG_BYTES = 300_000

# Finds elements by CSS selector through every shadow root (TensorBoard's
# dashboards are Polymer components, so document.querySelectorAll sees none).
DEEP_QUERY = """
const [selector, rootEl] = arguments;
const out = [];
function walk(root) {
  for (const el of root.querySelectorAll(selector)) out.push(el);
  for (const el of root.querySelectorAll('*')) if (el.shadowRoot) walk(el.shadowRoot);
  if (root.shadowRoot) walk(root.shadowRoot);
}
walk(rootEl || document);
return out;
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", default=os.path.join("runs", "screenshot-run"),
                        help="run folder (trained with `python train.py` if empty)")
    parser.add_argument("--out", default=os.path.join("docs", "images"))
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the server and for each chart")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--chromedriver",
                        default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    try:
        ensure_run(args.run_dir)
        ensure_layout(args.run_dir)
        os.makedirs(args.out, exist_ok=True)
        with tensorboard(args.run_dir, args.timeout) as base:
            paths = shoot(base, args)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in paths:
        size = os.path.getsize(path)
        print(f"{path}: {size / 1000:.0f} KB"
              + (" (over 300 KB: shrink the window)" if size > MAX_PNG_BYTES else ""))
    return 0


def ensure_run(run_dir: str) -> None:
    """Trains the default run into `run_dir` unless it has train events."""
    if glob.glob(os.path.join(run_dir, "train", "events.out.tfevents.*")):
        return
    print(f"Training {run_dir} (python train.py, about 30 s) ...", flush=True)
    subprocess.run([sys.executable, "train.py", f"--run_dir={run_dir}", "--verbose=0"],
                   check=True)


def ensure_layout(run_dir: str) -> None:
    """Writes the custom scalars layout into `run_dir/train` if it is missing
    (runs trained before `training.run` wrote it)."""
    from siamese_research.summaries import extras as tbx  # imports TF quietly
    import tensorflow as tf
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.custom_scalar import metadata

    folder = os.path.join(run_dir, "train")
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            if any(v.tag == metadata.CONFIG_SUMMARY_TAG for v in event.summary.value):
                return
    writer = tf.summary.create_file_writer(folder)
    tbx.write_custom_scalars_layout(writer)
    writer.close()


class tensorboard:
    """`with tensorboard(logdir, timeout) as base_url:` a local server that
    has loaded the run; killed on exit."""

    def __init__(self, logdir: str, timeout: float):
        self.logdir, self.timeout = logdir, timeout

    def __enter__(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", self.logdir,
             "--host", "127.0.0.1", "--port", str(port), "--load_fast=false"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _loaded(base), self.timeout, "TensorBoard to load the run",
                     self.proc)
        except BaseException:
            self.__exit__()
            raise
        return base

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()


def _loaded(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/data/plugin/histograms/tags", timeout=10) as r:
            tags = json.loads(r.read())
        return any(f"gradients/total/{KERNEL}" in t for t in tags.values())
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_for(check, timeout: float, what: str, proc=None):
    """Polls `check()` until truthy; raises RuntimeError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"tensorboard exited ({proc.returncode}) waiting for {what}")
        value = check()
        if value:
            return value
        time.sleep(0.5)  # poll interval
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def shoot(base: str, args) -> list:
    histograms_url = base + "/#histograms&tagFilter=" + urllib.parse.quote(
        HISTOGRAM_FILTER, safe="")
    # (file, url, section, window width): the histograms' window fits the
    # three cards (left, right, total) on one row.
    shots = [("branch_norms.png", base + "/#custom_scalars", "custom_scalars", 1100),
             ("gradient_histograms.png", histograms_url, "histograms", 1440)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        print("selenium not installed: whole-window chromium --screenshot instead",
              file=sys.stderr)
        return [cli_screenshot(args, url, os.path.join(args.out, name), f"{width},900")
                for name, url, _, width in shots]
    return selenium_screenshots(args, shots)


def cli_screenshot(args, url: str, path: str, size: str = "1100,900") -> str:
    """One `chromium --headless --screenshot` of `url` (no waiting beyond a
    virtual-time budget for the page's requests)."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([args.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                        f"--window-size={size}", "--virtual-time-budget=20000",
                        f"--screenshot={os.path.abspath(path)}", url],
                       check=True, capture_output=True, timeout=args.timeout)
    return path


def selenium_screenshots(args, shots) -> list:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    # An explicit driver: selenium would otherwise try to download one.
    driver = webdriver.Chrome(options=options, service=Service(args.chromedriver))
    paths = []
    try:
        for name, url, kind, width in shots:
            # Tall enough that every chart section is on screen (clicks need that).
            driver.set_window_size(width, 1400)
            driver.get("about:blank")
            driver.get(url)
            section = _custom_scalars if kind == "custom_scalars" else _histograms
            element = section(driver, args.timeout)
            path = os.path.join(args.out, name)
            element.screenshot(path)
            paths.append(path)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return paths


def _deep(driver, selector, root=None) -> list:
    return driver.execute_script(DEEP_QUERY, selector, root)


def _drawn(driver, root, selector: str, minimum: int) -> bool:
    """At least `minimum` drawn SVG paths under `root`, the same number as
    half a second ago (the charts have stopped loading)."""
    paths = [p for p in _deep(driver, selector, root)
             if len(p.get_attribute("d") or "") > 20]
    count = len(paths)
    previous = getattr(driver, "_last_count", None)
    driver._last_count = count
    return count >= minimum and count == previous


def _custom_scalars(driver, timeout: float):
    """The "branch gradients" category, drawn, with its legends open."""
    def category():
        for el in _deep(driver, "tf-category-paginated-view"):
            if "branch gradients" in (el.text or ""):
                return el
        return None

    el = wait_for(category, timeout, "the branch gradients category")
    driver._last_count = None
    # Five series (left, right, total norm; cosine, sum_error).
    wait_for(lambda: _drawn(driver, el, "path.line", 5), timeout, "the norm charts")
    for button in _deep(driver, "paper-icon-button.toggle-matches-button", el):
        button.click()
    wait_for(lambda: len([e for e in _deep(driver, ".match-list-entry", el)
                          if e.is_displayed()]) >= 5, timeout, "the chart legends")
    time.sleep(0.5)  # the legends' expand animation
    return el


def _histograms(driver, timeout: float):
    """The section of tags matching the filter: three drawn histograms."""
    def section():
        for el in _deep(driver, "tf-category-paginated-view"):
            if "Tags matching" in (el.text or "") and "gradients/total" in (el.text or ""):
                return el
        return None

    el = wait_for(section, timeout, "the filtered histograms")
    driver._last_count = None
    wait_for(lambda: _drawn(driver, el, "path", 3), timeout, "the histograms")
    return el


if __name__ == "__main__":
    sys.exit(main())
