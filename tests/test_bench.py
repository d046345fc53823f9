"""The benchmark's small mode runs and prints a table (timings not asserted)."""

import numpy as np

from benchmarks import bench
from siamese_research.data import builtin


def test_quick_bench_runs_and_writes_a_table(tmp_path, capsys):
    path = tmp_path / "bench.md"
    assert bench.main(["--quick", f"--markdown={path}"]) == 0
    out = capsys.readouterr().out
    for row in ("A: model.fit", "B: Trainer", "C: Trainer", "D: the floor", "B / A",
                "C / B", "D / A"):
        assert row in out
    # Each of A, B, C and D measured a positive rate (the numbers mean nothing).
    for label in ("A: model.fit", "B: Trainer", "C: Trainer", "D: the floor"):
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


def test_the_floor_row_trains_every_batch():
    # D is only a fair floor if it does B's and C's per-step work: gather,
    # forward, branch gradients, update, for each of the epoch's batches.
    pairs = builtin.random_pairs(num_samples=12, timesteps=3, features=bench.FEATURES,
                                 seed=0)
    floor = bench.FloorRunner(pairs, 4, seed=0, steps_per_execution=2)
    before = [v.numpy().copy() for v in floor.model.trainable_variables]
    seconds, cpu = floor.epoch()
    assert seconds > 0 and cpu >= 0
    assert int(floor.optimizer.iterations.numpy()) == 3  # 12 pairs / batch 4
    assert all(not np.array_equal(b, v.numpy())
               for b, v in zip(before, floor.model.trainable_variables))


def test_startup_jobs_are_the_issue_s_jobs_and_the_table_has_the_ratios(monkeypatch):
    from benchmarks import bench_startup as S

    jobs = S.jobs(whole_job=True)
    nb = jobs["notebook, 1 epoch: train.py"]
    assert nb[1] == S.TRAIN_PY and "--num_samples=1000" in nb and "--epochs=1" in nb
    assert jobs["notebook, 1 epoch: fit"][-3:] == ["1000", "1", "1"]
    assert jobs["32,000 x 8: fit (steps_per_execution=20)"][-3:] == ["32000", "8", "20"]
    # The defaults' job (8,000 pairs, 20 steps, 0.2 validation, 3 epochs) with fit.
    assert jobs["defaults' job (300 steps): fit"][-5:] == ["8000", "3", "1", "20", "0.2"]
    # run() interleaves the jobs round by round and times whole processes.
    order = []
    monkeypatch.setattr(S, "jobs", lambda whole_job: {
        name: [S.sys.executable, "-c", f"print({i})"] for i, name in enumerate(
            ["notebook, 1 epoch: train.py", "notebook, 1 epoch: fit",
             "python train.py (defaults)"])})
    real = S.subprocess.run

    def spy(command, **kw):
        order.append(command[-1])
        return real(command, **kw)

    monkeypatch.setattr(S.subprocess, "run", spy)
    result = S.run(rounds=2, quiet=True)
    assert order == ["print(0)", "print(1)", "print(2)"] * 2
    assert all(len(t) == 2 and min(t) > 0 for t in result["times"].values())
    if S.os.path.exists("/usr/bin/time"):  # its peak resident memory, per process
        assert all(len(p) == 2 and min(p) > 0 for p in result["peaks"].values())
    text = S.table(result)
    assert "train.py / fit" in text and "(target <= 1.3x)" in text
    assert "peak RSS MB" in text


def test_the_fit_job_trains_the_notebook_model(monkeypatch, capsys):
    """The fit job's script, run here (the bench runs it in a fresh process):
    the notebook's model, 20,673 parameters, one step per batch of 64."""
    from benchmarks import bench_startup as S

    monkeypatch.setattr(S.sys, "argv", ["-c", "128", "1", "1"])
    scope = {}
    exec(S.FIT + "\nprint(model.count_params(), int(model.optimizer.iterations))", scope)
    assert capsys.readouterr().out.split()[-2:] == ["20673", "2"]  # 128 pairs / 64
