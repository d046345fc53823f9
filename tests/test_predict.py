"""python -m siamese_research.tools.predict on the shared tiny text run."""

import csv
import json

import numpy as np
import pytest

from conftest import run_tool
from siamese_research.inference import predict as predict_lib
from siamese_research.tools import predict
from siamese_research import artifacts as runs
from siamese_research.config import DataError

PAIRS = [("what is thing1?", "thing1 is a thing"), ("What, is THING2!", "nothing"),
         ("zebra", "!!!")]  # the last right text has no words


def _write(path):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "q", "a"])  # no label column
        for i, (q, a) in enumerate(PAIRS):
            w.writerow([i, q, a])
    return str(path)


def test_cli_writes_rows_scores_and_labels(text_run, tmp_path):
    data = _write(tmp_path / "pairs.csv")
    proc = run_tool("predict", f"--run_dir={text_run}", f"--data={data}",
                    "--left_column=q", "--right_column=a")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no TensorFlow log lines
    rows = list(csv.DictReader(proc.stdout.splitlines()))
    assert [r["q"] for r in rows] == [q for q, _ in PAIRS]
    assert list(rows[0]) == ["id", "q", "a", "score", "label_pred"]
    run = runs.load_run(str(text_run))
    want = run.score([q for q, _ in PAIRS[:2]], [a for _, a in PAIRS[:2]])
    np.testing.assert_allclose([float(r["score"]) for r in rows[:2]], want, atol=1e-6)
    assert [r["label_pred"] for r in rows[:2]] == [str(int(s >= 0.5)) for s in want]
    assert rows[2]["score"] == "" and rows[2]["label_pred"] == ""  # no words

    # JSONL by the suffix (in-process main: the process start is tested above).
    out = tmp_path / "scored.jsonl"
    assert predict.main(["predict", f"--run_dir={text_run}", f"--data={data}",
                         f"--output={out}", "--which=last"]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["score"] == pytest.approx(float(want[0]), abs=1e-6)
    assert lines[2]["score"] is None and lines[2]["id"] == "2"


def test_cli_bad_input_is_one_line_exit_2(text_run, tmp_path):
    data = _write(tmp_path / "pairs.csv")
    proc = run_tool("predict", f"--run_dir={text_run}", f"--data={data}",
                    "--left_column=zzz")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no column 'zzz'" in lines[0], proc.stderr


def test_library_cases(text_run, tmp_path):
    run = runs.load_run(str(text_run))
    # Default columns: the first two text columns ('id' holds numbers).
    columns, rows = predict_lib.predict_file(run, _write(tmp_path / "p.csv"))
    assert columns == ["id", "q", "a", "score", "label_pred"]
    taken = tmp_path / "taken.csv"
    taken.write_text("q,a,score\nx,y,1\n")
    with pytest.raises(DataError, match="already has a column 'score'"):
        predict_lib.predict_file(run, str(taken))
    npz = tmp_path / "x.npz"
    np.savez(npz, left=np.ones((2, 3, 8)), right=np.ones((2, 3, 8)))
    with pytest.raises(DataError, match="trained on text pairs"):
        predict_lib.predict_file(run, str(npz))
    # A cosine run without threshold.json: scores, no label_pred column.
    from siamese_research.core.model import build_model

    cosine = runs.Run(build_model(units=2, features=8, merge="cosine"))
    columns, rows = predict_lib.predict_file(cosine, str(npz))
    assert columns == ["row", "score"] and len(rows) == 2
