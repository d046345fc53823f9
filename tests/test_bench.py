"""The benchmark's small mode runs and prints a table (timings not asserted)."""

from siamese_research import bench


def test_quick_bench_runs_and_writes_a_table(tmp_path, capsys):
    path = tmp_path / "bench.md"
    assert bench.main(["--quick", f"--markdown={path}"]) == 0
    out = capsys.readouterr().out
    for row in ("A: model.fit", "B: Trainer", "C: Trainer", "B / A", "C / B"):
        assert row in out
    # Each of A, B and C measured a positive rate (the numbers mean nothing).
    for label in ("A: model.fit", "B: Trainer", "C: Trainer"):
        line = next(x for x in out.splitlines() if label in x and x.startswith("|"))
        assert float(line.split("|")[3].replace(",", "")) > 0, line
    text = path.read_text()
    assert text.startswith("# Benchmarks") and "| --- |" in text and "Machine:" in text


def test_markdown_keeps_the_notes_around_the_table(tmp_path):
    path = tmp_path / "benchmarks.md"
    bench.write_markdown(str(path), "table 1")
    text = path.read_text()
    path.write_text("# Title\n\nIntro.\n\n" + text[text.index(bench.START):] + "\nNotes.\n")
    bench.write_markdown(str(path), "table 2")
    text = path.read_text()
    assert "table 2" in text and "table 1" not in text
    assert text.startswith("# Title\n\nIntro.") and text.endswith("Notes.\n")
