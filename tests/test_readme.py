"""The README's Python example runs as written, so it cannot rot."""

import os
import re

from conftest import ROOT


def python_blocks():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    # The example encoder module is exercised by tests/test_encoders.py.
    return [b for b in blocks if not b.startswith("# my_encoders.py")]


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = python_blocks()
    assert blocks, "the README has no ```python example"
    monkeypatch.chdir(tmp_path)  # its runs/readme lands in a temp folder
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.split()
    assert len(printed) == 3
    assert 0.0 <= float(printed[0]) <= 1.0
    assert float(printed[2]) <= 1e-6
    assert os.path.exists(tmp_path / "runs" / "readme" / "model.keras")
