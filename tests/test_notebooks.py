"""The four teaching notebooks: each runs top to bottom in smoke mode in a fresh kernel, and the committed files
are clean (generated from ``notebooks/build_notebooks.py``, < 5 MB, no home-directory paths or user names).

Execution uses nbclient with the ``python3`` kernel of the interpreter running the tests, with
``CLOUDRM_SMOKE=1`` (each notebook runs in well under 3 minutes that way). The data root comes from
``CLOUDRM_DATA`` as everywhere else; without it the notebooks run on built-in samples.
"""
from __future__ import annotations

import importlib.util
import os
import re

import pytest

from conftest import DATA, REPO

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

NB_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
NAMES = [p.stem for p in NOTEBOOKS]


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NB_DIR / "build_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_there_are_four_notebooks():
    assert len(NOTEBOOKS) == 4, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_matches_its_generator(name):
    """The committed .ipynb has exactly the cells build_notebooks.py generates (edit the generator, not the file)."""
    b = _builder()
    committed = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    assert b._sources(committed) == b._sources(b.build(name)), \
        f"{name}.ipynb differs from notebooks/build_notebooks.py: run `python notebooks/build_notebooks.py`"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean(name):
    """< 5 MB, no error outputs, no home-directory paths or user names in the committed outputs."""
    path = NB_DIR / f"{name}.ipynb"
    assert path.stat().st_size < 5_000_000, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"
    nb = nbformat.read(path, as_version=4)
    b = _builder()
    texts = b.output_texts(nb)
    for bad in b.private_strings():
        hits = [t for t in texts if bad in t]
        assert not hits, f"{path.name}: outputs contain {bad!r}: {hits[0][:200]!r}"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was committed with an error output"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_smoke_mode(name, monkeypatch):
    """Execute in a fresh kernel with CLOUDRM_SMOKE=1; any cell error fails the test."""
    from nbclient import NotebookClient

    monkeypatch.setenv("CLOUDRM_SMOKE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if DATA.is_dir():
        monkeypatch.setenv("CLOUDRM_DATA", str(DATA.resolve()))
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:                                   # run the committed cells, not their stored outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(NB_DIR)}})
    client.execute()                                        # raises CellExecutionError on the first failing cell
    texts = _builder().output_texts(nb)
    assert any(re.search(r"Run time of this notebook: .*smoke mode", t) for t in texts), "the last cell did not run"
    for bad in _builder().private_strings():
        hits = [t for t in texts if bad in t]
        assert not hits, f"{name}: smoke-run outputs contain {bad!r}: {hits[0][:200]!r}"
