"""The real TensorBoard server on a fresh 2-epoch tiny run, asked through its
HTTP API: every plugin this project writes for is active and serves this
run's data.

The server is a subprocess (`python -m tensorboard.main`) on a free port of
127.0.0.1; waits are bounded polls with a deadline, and the server is killed
in a `finally`.
"""

import collections
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from google.protobuf import text_format
from tensorboard.compat.proto import graph_pb2

from siamese_research import data as data_lib
from siamese_research.summaries import extras as tbx
from siamese_research import runner as training
from conftest import tiny

pytestmark = pytest.mark.slow

START_TIMEOUT = 90.0  # seconds for the server to answer and load the run
REQUEST_TIMEOUT = 20.0


def make_tensorboard_run(tmp_dir):
    """Trains a 2-epoch tiny run into `tmp_dir` with `training.run`, which
    writes every TensorBoard extra itself.

    Returns:
      (config, result, val_labels): the run's `Config`, `RunResult` and the
      validation labels.
    """
    config = tiny(run_dir=os.path.join(str(tmp_dir), "tiny-run"), projector_points=20)
    result = training.run(config, argv=["train.py", "--tiny"])
    assert result["exit_code"] == 0
    return config, result, data_lib.load(config).validation.label


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A TensorBoard subprocess and a tiny HTTP client for it."""

    def __init__(self, logdir, log_path):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        self.log = open(log_path, "w")
        # --load_fast=false: the Python loader, so the test does not depend on
        # the data server binary's platform; --reload_interval keeps the
        # first load prompt.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", logdir,
             "--host", "127.0.0.1", "--port", str(self.port), "--load_fast=false",
             "--reload_interval=1"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def get(self, path, **params):
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT) as r:
            return r.read()

    def json(self, path, **params):
        return json.loads(self.get(path, **params))

    def post(self, path, body):
        # TensorBoard refuses POSTs without this header (XSRF protection).
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              "X-XSRF-Protected": "1"})
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as r:
            return json.loads(r.read())

    def poll(self, what, check, timeout=START_TIMEOUT):
        """Calls `check()` until it returns a truthy value; bounded."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"tensorboard exited ({self.proc.returncode}) "
                                     f"while waiting for {what}:\n{self.output()}")
            try:
                value = check()
                if value:
                    return value
            except (urllib.error.URLError, ConnectionError, OSError, ValueError) as e:
                last = e
            time.sleep(0.25)  # poll interval, not synchronisation
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} "
                             f"(last error: {last}):\n{self.output()}")

    def output(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        finally:
            self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tensorboard")
    config, result, labels = make_tensorboard_run(tmp)
    logdir = os.path.dirname(config.run_dir)
    srv = Server(logdir, str(tmp / "tensorboard.log"))
    try:
        # The run's folders are runs "tiny-run", "tiny-run/train", ...
        srv.poll("the runs", lambda: {"tiny-run/train", "tiny-run/validation"}
                 <= set(srv.json("/data/runs")))
        srv.run = "tiny-run"
        srv.config, srv.result, srv.labels = config, result, labels
        yield srv
    finally:
        srv.stop()


def _scalar_values(srv, run, tag):
    rows = srv.json("/data/plugin/scalars/scalars", run=run, tag=tag)
    return [(step, value) for _, step, value in rows]


PLUGINS = ("scalars", "histograms", "text", "hparams", "graphs", "projector",
           "pr_curves", "custom_scalars")


def test_plugins_are_active(server):
    def all_active():
        listing = server.json("/data/plugins_listing")
        return all(listing.get(p, {}).get("enabled") for p in PLUGINS) and listing

    # Some plugins (projector) decide "active" in a background thread.
    listing = server.poll("every plugin active", all_active)
    assert {p: listing[p]["enabled"] for p in PLUGINS} == dict.fromkeys(PLUGINS, True)


def test_scalars_return_this_runs_sum_error(server):
    run = server.run + "/train"
    tags = server.json("/data/plugin/scalars/tags")[run]
    for tag in ("loss", "accuracy", "branch_gradients/left_norm",
                "branch_gradients/right_norm", "branch_gradients/total_norm",
                "branch_gradients/cosine", "branch_gradients/sum_error"):
        assert tag in tags, tag
    values = _scalar_values(server, run, "branch_gradients/sum_error")
    assert [s for s, _ in values] == [1, 2, 4, 6, 8, 10]  # log_every=2, 10 steps
    assert max(v for _, v in values) <= 1e-6
    assert max(v for _, v in values) == pytest.approx(server.result["max_sum_error"],
                                                      abs=1e-12)
    val = _scalar_values(server, server.run + "/validation", "accuracy")
    assert [s for s, _ in val] == [5, 10]
    assert val[-1][1] == pytest.approx(server.result["final"]["val_accuracy"], abs=1e-6)


def test_histograms_return_branch_gradients(server):
    run = server.run + "/train"
    tags = server.json("/data/plugin/histograms/tags")[run]
    for branch in ("left", "right", "total"):
        tag = f"gradients/{branch}/siamese/encoder/lstm/lstm_cell/kernel"
        assert tag in tags, (tag, sorted(tags)[:10])
    rows = server.json("/data/plugin/histograms/histograms", run=run,
                       tag="gradients/left/siamese/encoder/lstm/lstm_cell/kernel")
    assert [step for _, step, _ in rows] == [1, 4, 8, 10]  # every 4, first, last
    buckets = rows[0][2]
    assert len(buckets) == 30 and sum(b[2] for b in buckets) == 8 * 4 * 4  # kernel 8x16


def test_text_returns_config_and_model_summary(server):
    run = server.run + "/train"
    tags = server.json("/data/plugin/text/tags")[run]
    assert {"config", "model_summary"} <= set(tags)
    rows = server.json("/data/plugin/text/text", run=run, tag="config")
    # Rendered Markdown: the config JSON in a code block, quotes escaped.
    assert "&quot;encoder&quot;: &quot;lstm&quot;" in rows[0]["text"]
    rows = server.json("/data/plugin/text/text", run=run, tag="model_summary")
    assert "<table>" in rows[0]["text"] and "lstm_cell/kernel" in rows[0]["text"]


def test_hparams_experiment_and_session(server):
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    names = [h["name"] for h in experiment["hparamInfos"]]
    assert sorted(names) == sorted(tbx.HPARAMS)  # the server sorts them
    types = {h["name"]: h["type"] for h in experiment["hparamInfos"]}
    assert types["encoder"] == "DATA_TYPE_STRING"
    assert types["learning_rate"] == "DATA_TYPE_FLOAT64"
    # The dashboard's first columns: the model's settings, `share` among them.
    assert {h["name"] for h in experiment["hparamInfos"] if h["differs"]} == set(
        tbx.SHOWN_FIRST)
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metrics[:3] == ["final/val_accuracy", "final/val_auc", "final/val_loss"]
    groups = server.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
        "colParams": [{"hparam": h} for h in names]
        + [{"metric": {"tag": t, "group": ""}} for t in metrics],
        "startIndex": 0, "sliceSize": 10})
    assert groups["totalSize"] == 1
    group = groups["sessionGroups"][0]
    assert group["name"] == "tiny-run"
    assert group["hparams"]["encoder"] == "lstm"
    assert group["hparams"]["units"] == 4
    assert group["hparams"]["share"] == "tied"
    values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    assert values["final/val_accuracy"] == pytest.approx(
        server.result["final"]["val_accuracy"], abs=1e-6)
    assert {m["trainingStep"] for m in group["metricValues"]} == {server.result["step"]}


def test_graph_shows_one_encoder_for_both_branches(server):
    run = server.run + "/train"
    info = server.json("/data/plugin/graphs/info")[run]
    # The run graph: one step's forward and branch-split backward.
    assert info["run_graph"]
    text = server.get("/data/plugin/graphs/graph", run=run, conceptual="false")
    graph = text_format.Parse(text.decode(), graph_pb2.GraphDef())
    reads = collections.defaultdict(list)  # resource -> its ReadVariableOps
    for n in graph.node:
        if n.op == "ReadVariableOp":
            reads[n.input[0]].append(n.name)
    shared = {res: names for res, names in reads.items() if len(names) == 2}
    # The LSTM's kernel, recurrent_kernel and bias: each ONE resource input
    # read twice, and each read's copy feeds a different call of the encoder.
    assert len(shared) == 3, dict(reads)
    calls = set()
    for names in shared.values():
        per_read = set()
        for read in names:
            copies = [n for n in graph.node if read in n.input and n.op == "Identity"]
            per_read |= {c.split("/")[0] for n in copies for c in _consumers(graph, n.name)}
        assert len(per_read) == 2, per_read
        calls |= per_read
    assert len(calls) == 2 and all(c.startswith("lstm") for c in calls), calls


def _consumers(graph, name):
    return [n.name for n in graph.node
            if any(i.split(":")[0].lstrip("^") == name for i in n.input)]


def test_projector_serves_the_encodings(server):
    run = server.run + "/validation"
    server.poll("the projector run", lambda: run in server.json(
        "/data/plugin/projector/runs"))
    info = server.json("/data/plugin/projector/info", run=run)
    (emb,) = info["embeddings"]
    points = server.config.projector_points  # 20: 10 pairs x (left, right)
    assert [int(d) for d in emb["tensorShape"]] == [points, server.config.units]
    name = emb["tensorName"]
    meta = server.get("/data/plugin/projector/metadata", run=run, name=name)
    lines = meta.decode().splitlines()
    assert lines[0].split("\t") == ["side", "label", "pair", "text"]
    assert [ln.split("\t")[0] for ln in lines[1:]] == ["left"] * 10 + ["right"] * 10
    labels = [float(ln.split("\t")[1]) for ln in lines[1:11]]
    np.testing.assert_allclose(labels, server.labels[:10])
    tensor = server.get("/data/plugin/projector/tensor", run=run, name=name)
    values = struct.unpack(f"<{points * server.config.units}f", tensor)
    assert all(np.isfinite(values)) and any(v != 0 for v in values)


def test_pr_curves_one_per_epoch(server):
    run = server.run + "/validation"
    tags = server.json("/data/plugin/pr_curves/tags")
    assert tbx.PR_CURVE_TAG in tags[run]
    curves = server.json("/data/plugin/pr_curves/pr_curves", run=run,
                         tag=tbx.PR_CURVE_TAG)[run]
    assert [c["step"] for c in curves] == [5, 10]
    last = curves[-1]
    positives = int(np.sum(np.asarray(server.labels) >= 0.5))
    assert last["true_positives"][0] == positives  # threshold 0: all predicted 1
    assert last["recall"][0] == 1.0
    # The server drops the thresholds above the highest prediction.
    assert 2 <= len(last["precision"]) == len(last["recall"]) <= tbx.PR_THRESHOLDS


def test_custom_scalars_layout(server):
    layout = server.json("/data/plugin/custom_scalars/layout")
    charts = {c["title"]: c["multiline"]["tag"]
              for cat in layout["category"] for c in cat["chart"]}
    norms = r"^branch_gradients/(left|right|anchor|positive|negative|total)_norm$"
    assert charts["each branch's norm and the total"] == [norms]
    assert charts["cosines between branches and sum_error"] == [
        r"^branch_gradients/(cosine(/[a-z]+_[a-z]+)?|sum_error)$"]
    # The dashboard's data request for that chart returns this run's norms.
    data = server.json("/data/plugin/custom_scalars/scalars", run=server.run + "/train",
                       tag=norms)
    assert set(data["tag_to_events"]) == {"branch_gradients/left_norm",
                                          "branch_gradients/right_norm",
                                          "branch_gradients/total_norm"}
