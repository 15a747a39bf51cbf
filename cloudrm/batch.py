"""``remove --batch LIST_OR_DIR -o OUTDIR``: many scenes, optionally spread over processes with accelerate.

Scenes come from
* a list file: one scene per line, its 1-3 dates separated by spaces (shell-style quoting allowed; relative
  paths are relative to the list file; blank lines and ``#`` comments are skipped), or
* a folder: each sub-folder is one scene (its images are the dates, sorted by name; if some are named
  ``cloudy_*`` only those are used, so a ``clear.*`` reference beside them is ignored) and each image file
  directly in the folder is a one-date scene.

The output of a scene is ``OUTDIR/<name>.tif`` when its first date is a TIFF, else ``OUTDIR/<name>.png``;
``<name>`` is the sub-folder's name or the first date's file stem (made unique if two scenes share it).
Under ``accelerate launch --num_processes K`` every process takes its own share of the scenes
(``PartialState().split_between_processes``); each scene is computed exactly as in a single-process run.
Scenes whose output already exists are skipped (resume); outputs are written under a temporary name and
renamed, so an interrupted batch never leaves a half-written output. A scene that fails is reported on one
line and the batch goes on; the exit code is 2 if any scene failed, else 0.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from . import io
from .api import remove_clouds
from .errors import CloudRMError, ConfigError, InputError, one_line
from .methods import load_method
from .tiling import check_tiling


@dataclass(frozen=True)
class Scene:
    name: str
    dates: tuple[str, ...]

    def output(self, outdir: Path) -> Path:
        ext = ".tif" if self.dates and Path(self.dates[0]).suffix.lower() in (".tif", ".tiff") else ".png"
        return outdir / f"{self.name}{ext}"


def _images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in io.IMAGE_EXTS)
    cloudy = [p for p in files if p.name.lower().startswith("cloudy")]
    return cloudy or files


def _unique(scenes: list[tuple[str, tuple[str, ...], str]]) -> list[Scene]:
    """Make names unique: a clash takes the parent folder's name as a prefix, then a running number."""
    names = [n for n, _, _ in scenes]
    out, used = [], set()
    for name, dates, alt in scenes:
        if names.count(name) > 1 and alt:
            name = f"{alt}_{name}"
        base, k = name, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        out.append(Scene(name, dates))
    return out


def read_scenes(spec: str | os.PathLike) -> list[Scene]:
    """The scenes of a list file or a folder, in a fixed order (the same in every process)."""
    src = Path(spec)
    if not src.exists():
        raise InputError(f"{src}: batch list or folder not found")
    found: list[tuple[str, tuple[str, ...], str]] = []
    if src.is_dir():
        for entry in sorted(src.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                imgs = _images(entry)
                if imgs:
                    found.append((entry.name, tuple(str(p) for p in imgs), ""))
            elif entry.suffix.lower() in io.IMAGE_EXTS:
                found.append((entry.stem, (str(entry),), ""))
        if not found:
            raise InputError(f"{src}: no scene folders or images ({', '.join(io.IMAGE_EXTS)}) in this folder")
        return _unique(found)
    try:
        text = src.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{src}: cannot read the batch list ({type(exc).__name__})") from None
    for no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parts = shlex.split(line)
        except ValueError as exc:
            raise InputError(f"{src}:{no}: cannot parse the line ({exc})") from None
        dates = tuple(str(p if Path(p).is_absolute() else src.parent / p) for p in parts)
        first = Path(dates[0])
        found.append((first.stem, dates, first.parent.name))
    if not found:
        raise InputError(f"{src}: the batch list has no scenes (one scene per line, dates separated by spaces)")
    return _unique(found)


def _say(msg: str, err: bool = False) -> None:
    print(msg, file=sys.stderr if err else sys.stdout, flush=True)


def run_batch(args: argparse.Namespace) -> int:
    """The ``remove --batch`` command; returns the exit code (2 if any scene failed)."""
    if args.inputs:
        raise ConfigError("give either input images or --batch, not both")
    if getattr(args, "uncertainty", None):
        raise ConfigError("--uncertainty cannot be combined with --batch")
    # options that would fail every scene fail the batch before any work
    check_tiling(args.tile, args.overlap)
    load_method(args.method, args.weights).settings(args.sampler, args.steps, args.inr)
    scenes = read_scenes(args.batch)
    outdir = Path(args.output)
    if outdir.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg") and not outdir.is_dir():
        raise ConfigError(f"{outdir}: with --batch, -o is an output folder, not a file")
    if not outdir.parent.is_dir():
        raise ConfigError(f"{outdir}: its parent folder '{outdir.parent}' does not exist")

    import torch
    from accelerate import PartialState

    # cpu=True without CUDA: `accelerate launch --multi_gpu` (or --cpu) then runs gloo CPU processes
    state = PartialState(cpu=not torch.cuda.is_available())
    device = state.device if state.device.type != "cpu" else None
    if state.is_main_process:
        try:
            outdir.mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{outdir}: cannot create the output folder ({exc.strerror})") from None
    state.wait_for_everyone()
    if not os.access(outdir, os.W_OK):
        raise ConfigError(f"{outdir}: output folder is not writable")

    tag = f"[{state.process_index}/{state.num_processes}] " if state.num_processes > 1 else ""
    done = skipped = failed = 0
    with state.split_between_processes(scenes) as mine:
        for sc in mine:
            out = sc.output(outdir)
            if out.exists():
                skipped += 1
                _say(f"{tag}skip {sc.name}: {out} exists")
                continue
            try:
                res = remove_clouds(list(sc.dates), out, method=args.method, weights=args.weights,
                                    sampler=args.sampler, steps=args.steps, inr=args.inr, seed=args.seed,
                                    samples=args.samples, bands=args.bands, tile=args.tile, overlap=args.overlap,
                                    device=device)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # one bad scene never stops the batch
                failed += 1
                msg = one_line(exc)
                kind = "" if isinstance(exc, CloudRMError) else f"{type(exc).__name__}: "
                _say(f"{tag}failed {sc.name}: {kind}{msg}", err=True)
                continue
            done += 1
            _say(f"{tag}wrote {out} ({args.method}, {res.seconds:.2f} s)")

    counts = [done, skipped, failed]
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        per = gather_object([counts])
        counts = [sum(c[i] for c in per) for i in range(3)]
        state.wait_for_everyone()
        state.destroy_process_group()  # a live gloo group aborts the process at exit
    done, skipped, failed = counts
    if state.is_main_process:
        _say(f"batch: {len(scenes)} scene(s), {done} written, {skipped} skipped (output exists), {failed} failed")
    if failed:
        if state.is_main_process:
            _say(f"error: {failed} of {len(scenes)} scene(s) failed (see the lines above)", err=True)
        return 2
    return 0
