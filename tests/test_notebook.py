"""notebooks/weight_sharing.ipynb runs top to bottom, so it cannot rot.

The notebook is executed in a fresh `python3` kernel (nbclient) that imports
this checkout's package (PYTHONPATH = the repository root), with its run
folder in a temp folder (TMPDIR). The checks read what it printed and
displayed.
"""

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT

NOTEBOOK = os.path.join(ROOT, "notebooks", "weight_sharing.ipynb")

pytestmark = pytest.mark.slow  # a kernel process


def test_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_notebook_runs(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    path = [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's run folder
    monkeypatch.setenv("MPLBACKEND", "Agg")  # no display; %matplotlib inline renders PNGs
    NotebookClient(nb, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream"
                   and o.name == "stdout")
    images = [o for o in outputs if "image/png" in o.get("data", {})]

    # This checkout's package, not another installed copy.
    source = re.search(r"siamese_research \S+ from (.+)", text).group(1).strip()
    package = os.path.join(ROOT, "siamese_research")
    assert os.path.realpath(source) == os.path.realpath(package)
    # The notebook's model: tied 20,673 (20,608 in the shared LSTM); untied
    # the encoder doubles.
    assert "tied  : 20,673 parameters, 20,608 of them in the encoder" in text
    assert "untied: 41,281 parameters, 41,216 of them in the encoder" in text
    # left + right = total on the shared kernel and over all shared variables.
    for what in ("kernel", "all shared variables"):
        err = float(re.search(rf"max relative error, {what}[^:]*: (\S+)", text).group(1))
        assert err <= 1e-5, (what, err)
    # The branch scalars were read back from the run's events.
    table = re.findall(r"^\s*(\d+)\s+([\d.]+)\s+([\d.]+)$", text, flags=re.M)
    steps = [int(s) for s, _, _ in table]
    last = int(re.search(r"^(\d+) steps in ", text, flags=re.M).group(1))
    assert steps[0] == 1 and steps[-1] == last and steps == sorted(steps), text
    assert len(steps) >= 3, text
    assert all(float(a) > 0 and float(b) > 0 for _, a, b in table)
    assert float(re.search(r"sum_error at steps .*: max (\S+)", text).group(1)) <= 1e-5
    # The loaded run scored 4 new pairs, and concat's logits add up as claimed.
    scores = re.search(r"scores: \[([^\]]*)\]", text).group(1).split()
    assert len(scores) == 4 and all(0.0 <= float(s) <= 1.0 for s in scores)
    same = float(re.search(r"logit s\(a,a\) \+ logit s\(b,b\) = (\S+)", text).group(1))
    cross = float(re.search(r"logit s\(a,b\) \+ logit s\(b,a\) = (\S+)", text).group(1))
    assert abs(same - cross) <= 1e-3
    # The gradient figure and the training figure.
    assert len(images) >= 2
