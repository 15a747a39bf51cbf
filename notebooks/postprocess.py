#!/usr/bin/env python
"""Run, post-process and check the teaching notebooks (sources: the paired ``NN_name.py`` files).

Usage (from the repository root)::

    python notebooks/postprocess.py --execute                  # full run of all four, fresh kernels, in place
    python notebooks/postprocess.py --execute --only 02        # one notebook (name prefix)
    python notebooks/postprocess.py --execute --smoke --out /tmp/nb   # CI-sized run (CLOUDRM_SMOKE=1), elsewhere
    python notebooks/postprocess.py notebooks/02_diffcr_with_accelerate.ipynb   # after "Run All" + save in Jupyter
    python notebooks/postprocess.py --check                    # the committed notebooks: paired, < 5 MB, clean

``--execute`` reads each notebook from its py:percent source (cell ids and metadata from the paired ``.ipynb``)
and runs it top to bottom in a fresh ``python3`` kernel. Post-processing, for a run made here or in Jupyter:
tqdm's progress widgets become their final text line (GitHub and the Hub do not render widgets), absolute
repository and home paths in outputs are replaced, and the run time printed by the last cell is written into the
"**Run time:**" line at the top, in the ``.ipynb`` and in its ``.py``. A notebook whose outputs hold an error, a
home-directory path or the user name, or that is 5 MB or more, is refused: the command exits 1 and (for a run)
leaves ``NAME.failed.ipynb`` beside the target instead of overwriting it.
"""
from __future__ import annotations

import argparse
import getpass
import html
import os
import re
import sys
import time
from pathlib import Path

import nbformat

NB_DIR = Path(__file__).resolve().parent
REPO = NB_DIR.parent
MAX_BYTES = 5_000_000
FORMATS = "ipynb,py:percent"
RUNTIME_PREFIX = "**Run time:**"
RUNTIME_RE = re.compile(r"Run time of this notebook: (?P<wall>[\d.]+) s wall-clock, (?P<cpu>[\d.]+) s CPU "
                        r"\((?P<mode>\w+) mode, (?P<cores>\d+) CPU cores, torch threads (?P<threads>\d+), "
                        r"GPU (?P<gpu>[^)]*)\)")


class NotebookError(Exception):
    """A notebook failed to run or is not fit to commit (the message says which and why)."""


def names() -> list[str]:
    """The notebooks, by their sources: ``NN_name`` for every ``notebooks/NN_name.py``."""
    return sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.py"))


# ------------------------------------------------------------------------------------------------ checks
def private_strings() -> list[str]:
    """Substrings no committed output may contain: home-directory prefixes and the user name."""
    bad = ["/root", "/home/"]
    home = os.path.expanduser("~")
    if home not in ("/", "") and home not in bad:
        bad.append(home)
    user = getpass.getuser()
    if user and user != "root":   # "root" itself is covered by "/root" (and "data root" is ordinary prose)
        bad.append(user)
    return bad


def output_texts(nb) -> list[str]:
    """Every text-like thing in the outputs (streams, text/plain, text/html, JSON, errors)."""
    texts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if "text" in o:
                texts.append(o["text"] if isinstance(o["text"], str) else "".join(o["text"]))
            for mime, val in (o.get("data") or {}).items():
                if mime.startswith("text/") or mime.endswith("json"):
                    texts.append(val if isinstance(val, str) else str(val))
            if o.get("output_type") == "error":
                texts.append("\n".join(o.get("traceback", [])))
    return texts


def problems(nb, path: Path | None = None) -> list[str]:
    """Why this notebook may not be committed: private strings or errors in its outputs, or its size."""
    found = []
    texts = output_texts(nb)
    for bad in private_strings():
        hits = [t for t in texts if bad in t]
        if hits:
            found.append(f"outputs contain {bad!r}: {hits[0][:200]!r}")
    if any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", [])):
        found.append("an output is an error")
    size = path.stat().st_size if path is not None else len(nbformat.writes(nb).encode())
    if size >= MAX_BYTES:
        found.append(f"{size / 1e6:.1f} MB is over the {MAX_BYTES / 1e6:.0f} MB limit")
    return found


def source_cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def pairing_problems(name: str) -> list[str]:
    """Whether NN_name.ipynb is paired with NN_name.py and has exactly its cells (run `jupytext --sync` if not)."""
    import jupytext

    py, ipynb = NB_DIR / f"{name}.py", NB_DIR / f"{name}.ipynb"
    if not ipynb.is_file():
        return [f"{ipynb.name} is missing: run `jupytext --sync {py.relative_to(REPO)}`"]
    found = []
    nb = nbformat.read(ipynb, as_version=4)
    if nb.metadata.get("jupytext", {}).get("formats") != FORMATS:
        found.append(f"{ipynb.name} is not paired (jupytext formats should be {FORMATS!r})")
    text = py.read_text(encoding="utf-8")
    body = text.split("\n# ---\n", 1)[1] if text.startswith("# ---\n") else text
    if not body.lstrip("\n").startswith("# %%"):
        found.append(f"{py.name}: the first cell does not start with a `# %%` marker")
    if source_cells(jupytext.reads(text, fmt="py:percent")) != source_cells(nb):
        found.append(f"{ipynb.name} and {py.name} have different cells: run `jupytext --sync {py.relative_to(REPO)}`")
    return found


# ------------------------------------------------------------------------------------------- post-processing
def freeze_progress_bars(nb) -> None:
    """Replace tqdm's widget outputs by their final text line (GitHub does not render widgets)."""
    state = (nb.metadata.get("widgets") or {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})

    def model(ref):
        return state.get(str(ref).replace("IPY_MODEL_", ""), {}).get("state", {})

    for c in nb.cells:
        if c.cell_type != "code":
            continue
        outs = []
        for o in c.get("outputs", []):
            view = (o.get("data") or {}).get("application/vnd.jupyter.widget-view+json")
            if view is None:
                outs.append(o)
                continue
            box = model(view.get("model_id"))
            kids = [model(k) for k in box.get("children", [])]
            bars = [k for k in kids if "max" in k and "value" in k]
            texts = [html.unescape(re.sub(r"<[^>]+>", "", k.get("value", ""))) for k in kids if "max" not in k]
            if not bars:
                continue
            frac = (bars[0]["value"] / bars[0]["max"]) if bars[0].get("max") else 1.0
            filled = int(round(20 * min(max(frac, 0.0), 1.0)))
            left = texts[0] if texts else ""
            right = texts[1] if len(texts) > 1 else ""
            if not left.rstrip().endswith("%"):
                left = f"{left}{100 * frac:3.0f}%"
            line = f"{left}|{'█' * filled}{' ' * (20 - filled)}|{right}".strip()
            outs.append(nbformat.v4.new_output("stream", name="stderr", text=line + "\n"))
        c["outputs"] = outs
    nb.metadata.pop("widgets", None)


def scrub(nb) -> None:
    """Last safety net: replace the home directory and absolute repository paths in outputs."""
    repl = [(str(REPO.parent) + "/", "../"), (os.path.expanduser("~"), "~")]

    def fix(s):
        for a, b in repl:
            if a and a not in ("/", "~"):
                s = s.replace(a, b)
        return s

    for c in nb.cells:
        for o in c.get("outputs", []):
            if "text" in o:
                o["text"] = fix(o["text"] if isinstance(o["text"], str) else "".join(o["text"]))
            for mime in list(o.get("data") or {}):
                if mime.startswith("text/") and isinstance(o["data"][mime], str):
                    o["data"][mime] = fix(o["data"][mime])


def runtime_line(nb) -> str | None:
    """The "**Run time:**" line for the top of the notebook, from the line its last cell printed."""
    m = RUNTIME_RE.search("\n".join(output_texts(nb)))
    if not m:
        return None
    mode = "full run" if m["mode"] == "full" else "smoke run (`CLOUDRM_SMOKE=1`)"
    return (f"{RUNTIME_PREFIX} {mode}: {float(m['wall']) / 60:.1f} min wall-clock, {float(m['cpu']) / 60:.1f} min "
            f"of CPU time (kernel plus child processes) on a machine with {m['cores']} CPU cores "
            f"({'no GPU' if m['gpu'] == 'none' else 'GPU: ' + m['gpu']}; torch threads: {m['threads']}), "
            "measured by the last cell of the run whose outputs are stored here.")


def replace_runtime(text: str, line: str, prefix: str = "") -> str:
    return "\n".join(prefix + line if s.startswith(prefix + RUNTIME_PREFIX) else s for s in text.split("\n"))


def postprocess(nb) -> str | None:
    """Freeze progress bars, scrub paths, fill the run-time line (in place); returns that line."""
    freeze_progress_bars(nb)
    scrub(nb)
    for c in nb.cells:                               # markdown cells carry no outputs (nbformat's schema)
        if c.cell_type == "markdown":
            c.pop("outputs", None)
            c.pop("execution_count", None)
    line = runtime_line(nb)
    if line and nb.cells and nb.cells[0].cell_type == "markdown":
        nb.cells[0].source = replace_runtime(nb.cells[0].source, line)
    return line


def save(nb, target: Path, line: str | None) -> None:
    """Write the notebook, or NAME.failed.ipynb and NotebookError when it is not fit to commit. When the target
    is a paired notebook here, its .py gets the same run-time line so the two stay in sync."""
    found = problems(nb)
    if found:
        failed = target.with_name(f"{target.stem}.failed.ipynb")
        nbformat.write(nb, failed)
        raise NotebookError(f"{target.stem}: " + "; ".join(found) + f" (see {failed})")
    nbformat.write(nb, target)
    py = target.with_suffix(".py")
    if line and target.parent.resolve() == NB_DIR and py.is_file():
        py.write_text(replace_runtime(py.read_text(encoding="utf-8"), line, prefix="# "), encoding="utf-8")


# ----------------------------------------------------------------------------------------------- running
def from_source(name: str):
    """The notebook as its .py source says, with cell ids and metadata of the paired .ipynb; no outputs."""
    import jupytext
    from jupytext.combine import combine_inputs_with_outputs

    nb = jupytext.read(NB_DIR / f"{name}.py")
    ipynb = NB_DIR / f"{name}.ipynb"
    if ipynb.is_file():
        nb = combine_inputs_with_outputs(nb, nbformat.read(ipynb, as_version=4), fmt="py:percent")
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nb.metadata.pop("widgets", None)
    return nb


def execute(name: str, smoke: bool, out_dir: Path, timeout: int = 1800):
    """Run one notebook from its source in a fresh kernel, post-process and save it in out_dir."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = from_source(name)
    env_backup = dict(os.environ)
    os.environ.pop("CLOUDRM_SMOKE", None)
    if smoke:
        os.environ["CLOUDRM_SMOKE"] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            store_widget_state=True, resources={"metadata": {"path": str(NB_DIR)}})
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.ipynb"
    try:
        client.execute()
    except CellExecutionError as exc:
        failed = target.with_name(f"{name}.failed.ipynb")
        nbformat.write(nb, failed)
        last = "\n".join(str(exc).strip().splitlines()[-15:])
        raise NotebookError(f"{name}: a cell failed; partial notebook in {failed}\n{last}") from None
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    save(nb, target, postprocess(nb))
    return nb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="executed .ipynb files to post-process in place")
    ap.add_argument("--execute", action="store_true", help="run the notebooks from their .py sources")
    ap.add_argument("--smoke", action="store_true", help="with --execute: CLOUDRM_SMOKE=1 (small and fast)")
    ap.add_argument("--out", default=None, help="with --execute: write the notebooks here (default: in place)")
    ap.add_argument("--only", default=None, help="with --execute or --check: name prefixes, e.g. 02 or 01,04")
    ap.add_argument("--timeout", type=int, default=None, help="seconds per cell (default 600 smoke, 1800 full)")
    ap.add_argument("--check", action="store_true", help="check the committed notebooks (exit 1 on a problem)")
    args = ap.parse_args(argv)
    selected = [n for n in names() if not args.only or any(n.startswith(p.strip()) for p in args.only.split(","))]
    try:
        if args.check:
            found = [f"{n}: {p}" for n in selected for p in pairing_problems(n) + problems(
                nbformat.read(NB_DIR / f"{n}.ipynb", as_version=4), NB_DIR / f"{n}.ipynb")]
            print("\n".join(found) or f"{len(selected)} notebooks paired with their sources and clean")
            return 1 if found else 0
        if args.execute:
            if args.smoke and args.out is None:
                ap.error("--smoke writes CI-sized outputs: give --out DIR (the committed notebooks keep full runs)")
            out_dir = Path(args.out) if args.out else NB_DIR
            for n in selected:
                t0 = time.perf_counter()
                nb = execute(n, args.smoke, out_dir, args.timeout or (600 if args.smoke else 1800))
                size = (out_dir / f"{n}.ipynb").stat().st_size / 1e6
                print(f"{n}: ran in {time.perf_counter() - t0:.0f} s, {size:.2f} MB -> {out_dir / n}.ipynb")
                print(f"   {runtime_line(nb) or 'no run-time line printed by the last cell'}")
            return 0
        if not args.files:
            ap.error("give executed .ipynb files, --execute or --check")
        for f in map(Path, args.files):
            nb = nbformat.read(f, as_version=4)
            line = postprocess(nb)
            save(nb, f, line)
            print(f"{f}: post-processed, {f.stat().st_size / 1e6:.2f} MB; {line or 'no run-time line found'}")
        return 0
    except NotebookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
