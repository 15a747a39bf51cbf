"""The four teaching notebooks: each ``notebooks/NN_name.py`` (jupytext py:percent, the source) is paired with its
``.ipynb`` (the full-run outputs readers see), the committed notebooks are clean (< 5 MB, no errors, no
home-directory paths or user names in outputs) and every source runs top to bottom in smoke mode.

Running and checking go through ``notebooks/postprocess.py``, the same script used to re-run the notebooks in
full: the smoke run executes the ``.py`` source with nbclient in a fresh ``python3`` kernel of the interpreter
running the tests, with ``CLOUDRM_SMOKE=1`` (each notebook well under 3 minutes that way), and writes the result
to a temporary folder. The data root comes from ``CLOUDRM_DATA`` as everywhere else; without it the notebooks run
on built-in samples.
"""
from __future__ import annotations

import importlib.util
import os
import re

import pytest

from conftest import DATA, REPO

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("jupytext")

NB_DIR = REPO / "notebooks"
NAMES = sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.py"))


def _postprocess():
    spec = importlib.util.spec_from_file_location("postprocess", NB_DIR / "postprocess.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pp = _postprocess()


def test_four_sources_each_with_its_notebook():
    ipynbs = sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert len(NAMES) == 4 and NAMES == ipynbs, (NAMES, ipynbs)
    assert pp.names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_paired_with_its_source(name):
    """The .ipynb has jupytext pairing metadata and exactly the cells of its .py (edit the .py, `jupytext --sync`)."""
    assert pp.pairing_problems(name) == []


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean_and_fully_run(name):
    """< 5 MB, no error outputs, no home-directory paths or user names; outputs and run time from a full run."""
    path = NB_DIR / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert pp.problems(nb, path) == []
    line = pp.runtime_line(nb)
    assert line is not None and "full run" in line, f"{name}: the last cell's output is not from a full run"
    assert line in nb.cells[0].source.split("\n"), f"{name}: the run-time line at the top is not this run's"
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), f"{name}: a cell never ran"


def test_postprocessor_refuses_private_strings_and_big_files(tmp_path):
    """The privacy scan and the size cap really catch what they are for."""
    home_path = "/home/someone/data/x.png"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text=f"wrote {home_path}\n")])])
    assert any("/home/" in p for p in pp.problems(nb))
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "x" * pp.MAX_BYTES})]
    assert any("MB limit" in p for p in pp.problems(nb))
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{pp.REPO.parent}/shared/data\n")]
    pp.scrub(nb)
    assert nb.cells[0].outputs[0]["text"] == "../shared/data\n" and pp.problems(nb) == []
    with pytest.raises(pp.NotebookError, match="/home/"):
        nb.cells[0].outputs[0]["text"] = home_path
        pp.save(nb, tmp_path / "leaky.ipynb", None)
    assert not (tmp_path / "leaky.ipynb").exists() and (tmp_path / "leaky.failed.ipynb").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_smoke_mode(name, monkeypatch, tmp_path):
    """Execute the .py source in a fresh kernel with CLOUDRM_SMOKE=1; any cell error fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    if DATA.is_dir():
        monkeypatch.setenv("CLOUDRM_DATA", str(DATA.resolve()))
    nb = pp.execute(name, smoke=True, out_dir=tmp_path, timeout=600)   # NotebookError on a failing cell or leak
    texts = pp.output_texts(nb)
    assert any(re.search(r"Run time of this notebook: .*smoke mode", t) for t in texts), "the last cell did not run"
    assert "smoke run" in nb.cells[0].source
    assert (tmp_path / f"{name}.ipynb").is_file() and pp.problems(nb) == []
