"""The encode tool, run as the `siamese-encode` console script would be."""

import csv
import os

import numpy as np

from conftest import run_tool
from siamese_research import artifacts as runs

TEXTS = ["thing1 is a thing", "...", "Nothing to see"]


def test_console_script_writes_encodings_texts_and_a_projector(text_run, tmp_path):
    data = tmp_path / "answers.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a"])
        w.writerows([t] for t in TEXTS)
    out, proj = tmp_path / "emb.npz", tmp_path / "proj"
    proc = run_tool("encode", f"--run_dir={text_run}", f"--data={data}", "--column=a",
                    f"--output={out}", f"--projector_dir={proj}",
                    console_script=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # quiet: the program is one of the package's tools
    assert "1 texts with no words left out" in proc.stdout
    with np.load(out, allow_pickle=False) as npz:
        texts, rows, enc = npz["texts"].tolist(), npz["rows"], npz["encodings"]
    assert texts == [TEXTS[0], TEXTS[2]] and rows.tolist() == [0, 2]
    want = runs.load_run(str(text_run)).encode(texts)
    np.testing.assert_allclose(enc, want, atol=1e-6)
    meta = (proj / "projector_metadata.tsv").read_text().splitlines()
    assert meta == ["row\ttext", f"0\t{TEXTS[0]}", f"2\t{TEXTS[2]}"]
    assert (proj / "projector_config.pbtxt").exists()
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(proj))

    # A bad column is a one-line DataError (the exit-2 path: test_predict).
    import pytest

    from siamese_research.inference import encode
    from siamese_research.config import DataError

    with pytest.raises(DataError, match="no column 'b'"):
        encode.read_column(runs.load_run(str(text_run)), str(data), "b")
