"""The package's layers hold: each module imports only the layers below it
(import-linter's layers contract in setup.cfg), no two modules import each
other round a cycle, and no import hides inside a function."""

import ast
import os
import shutil
import subprocess
import sys

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "siamese_research")
# Imports that must sit inside a function, each with its reason. Nothing
# else may: a module's dependencies are read at its top, and an import put
# in a function to dodge a cycle would hide an upward edge from the contract.
INNER_IMPORTS = {
    ("quiet.py", "import_tensorflow_quietly"):
        "TensorFlow is imported there, with stderr shut, before anything else "
        "imports it (the tools' quiet start)",
}


def lint_imports(where=ROOT):
    """setup.cfg's contracts on the package found first from `where`."""
    # (lint-imports, run by the interpreter that runs the suite)
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import "
                           "lint_imports_command as main; sys.exit(main())", "--no-cache",
                           os.path.join(ROOT, "setup.cfg")],
                          cwd=where, capture_output=True, text=True, timeout=120)


def test_the_layers_contract_and_no_cycles_hold():
    proc = lint_imports()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The check can fail: a copy of the package whose core imports the
    trainer (a layer above it) breaks the layers contract."""
    copy = tmp_path / "siamese_research"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    merges = copy / "core" / "merges.py"
    merges.write_text(merges.read_text() + "\nfrom siamese_research.train import trainer\n")
    proc = lint_imports(str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "siamese_research.core.merges -> siamese_research.train.trainer" in proc.stdout
    assert "BROKEN" in proc.stdout


def inner_imports():
    """(file, function, import) for every import statement inside a function
    of the package."""
    found = []
    for folder, _, names in os.walk(PACKAGE):
        for name in sorted(n for n in names if n.endswith(".py")):
            path = os.path.join(folder, name)
            tree = ast.parse(open(path, encoding="utf-8").read())
            for fn in ast.walk(tree):
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for node in ast.walk(fn):
                        if isinstance(node, (ast.Import, ast.ImportFrom)):
                            found.append((os.path.relpath(path, PACKAGE), fn.name,
                                          ast.unparse(node)))
    return found


def test_no_import_inside_a_function_but_the_listed_ones():
    found = inner_imports()
    unlisted = [f for f in found if f[:2] not in INNER_IMPORTS]
    assert not unlisted, f"imports inside functions: {unlisted}"
    # The list holds nothing stale.
    assert {f[:2] for f in found} == set(INNER_IMPORTS)
