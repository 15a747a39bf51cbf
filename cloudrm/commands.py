"""The CLI's subcommands, each a thin layer over the Python API (see :mod:`cloudrm.cli` for the flags)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .errors import ConfigError, InputError


def _progress_bar(desc: str):
    from tqdm.auto import tqdm

    bar = {"t": None}

    def cb(i: int, n: int) -> None:
        if bar["t"] is None:
            bar["t"] = tqdm(total=n, desc=desc, leave=False, file=sys.stderr, disable=not sys.stderr.isatty())
        bar["t"].n = i
        bar["t"].refresh()
        if i >= n:
            bar["t"].close()
            bar["t"] = None
    return cb


def remove(args: argparse.Namespace) -> int:
    from .api import remove_clouds

    if args.batch:
        from .batch import run_batch
        return run_batch(args)
    if not args.inputs:
        raise InputError("no input images: give 1 to 3 cloudy dates of one place")
    _check_remove_paths(args)
    res = remove_clouds(args.inputs, args.output, method=args.method, weights=args.weights, sampler=args.sampler,
                        steps=args.steps, inr=args.inr, seed=args.seed, samples=args.samples, bands=args.bands,
                        uncertainty=args.uncertainty, tile=args.tile, overlap=args.overlap,
                        progress=_progress_bar(args.method))
    for note in res.info.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.output} ({args.method}, {res.seconds:.2f} s)")
    return 0


def _check_remove_paths(args: argparse.Namespace) -> None:
    """Before any work: the seed is in range, ``-o`` is not a folder, ``--uncertainty`` is not ``-o``."""
    from .methods.base import check_seed

    check_seed(args.seed)
    out = Path(args.output)
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; -o names the output file (.png, .tif), or use --batch for a folder")
    if args.uncertainty is not None:
        unc = Path(args.uncertainty)
        if unc.is_dir():
            raise ConfigError(f"{unc}: is a folder; --uncertainty names a file (.png, .tif)")
        if unc.resolve() == out.resolve():
            raise ConfigError("--uncertainty and -o name the same file; give the map its own name")


def eval(args: argparse.Namespace) -> int:  # noqa: A001 - the subcommand's name
    from . import metrics
    from .datasets import (VAL_FRACTION, detect_layout, iter_eval_items, rice_pairs, s2_is_validation,
                           scene_folders, split_names)
    from .methods import load_method

    data = Path(args.data)
    if not data.is_dir():
        raise InputError(f"{data}: data folder not found")
    m = load_method(args.method, args.weights)
    opts = m.settings(args.sampler, args.steps, args.inr)
    names = None
    if args.split == "val" and detect_layout(data) == "scenes":  # SEN12MS-CR-style scenes: split by region
        names = [n for n, _, _ in scene_folders(data) if s2_is_validation(n)]
    elif args.split == "val":
        pairs = rice_pairs(data)
        _, names = split_names([n for n, _, _ in pairs], VAL_FRACTION.get(data.name, 0.15))
    rows, corr = [], []
    for item in iter_eval_items(data, args.layout, limit=args.limit, names=names):
        if item["target"] is None:
            continue
        res = m(list(item["dates"]), sampler=args.sampler, steps=args.steps, inr=args.inr, seed=args.seed,
                samples=args.samples)
        row = {"name": item["name"], **metrics.evaluate(res.image, item["target"]), "lpips": None,
               "magenta_excess": metrics.magenta_excess(res.image, item["target"]),
               "seconds": round(res.seconds, 4)}
        if "uncertainty" in res.maps:
            err = np.abs(metrics.as_uint8_float(res.image) - item["target"]).mean(0)
            row["uncertainty_corr"] = metrics.spearman(res.maps["uncertainty"], err)
            corr.append(row["uncertainty_corr"])
        rows.append(row)
        print(f"{item['name']:>28}  psnr {row['psnr']:6.2f}  ssim {row['ssim']:.4f}  {row['seconds']:.2f}s",
              file=sys.stderr)
    if not rows:
        raise InputError(f"{data}: no images with a cloud-free reference found")

    def mean(k):
        vals = [r[k] for r in rows if r.get(k) is not None]
        return float(np.mean(vals)) if vals else None

    out = {"method": args.method, "dataset": data.name, "n": len(rows), "psnr": mean("psnr"), "ssim": mean("ssim"),
           "rmse": mean("rmse"), "niqe": mean("niqe"), "brisque": mean("brisque"), "lpips": None,
           "seconds_per_image": mean("seconds"), "weights": m.weights_id, "sampler": opts["sampler"],
           "steps": opts["steps"], "inr": (args.inr or 3) if args.method == "idf-cr" else None,
           "split": args.split, "per_image": rows}
    if corr:
        out["uncertainty_corr"] = float(np.mean(corr))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    if getattr(args, "record", False):
        from .weights import resolve

        folder = resolve(args.method, args.weights)[0]
        record_eval(out, folder, f"python -m cloudrm eval --method {args.method}"
                    + (f" --weights {args.weights}" if args.weights else "")
                    + (f" --inr {args.inr}" if args.inr else "") + f" --data {data.name} --split {args.split}")
        print(f"recorded in {folder / 'cloudrm.json'}", file=sys.stderr)
    fmt = lambda v, p: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    print(f"{'method':<10} {'dataset':<22} {'n':>4} {'PSNR':>7} {'SSIM':>7} {'RMSE':>7} {'NIQE':>6} {'BRISQUE':>8} {'s/img':>6}")
    print(f"{args.method:<10} {data.name:<22} {len(rows):>4} {fmt(out['psnr'], 2):>7} {fmt(out['ssim'], 4):>7} "
          f"{fmt(out['rmse'], 4):>7} {fmt(out['niqe'], 2):>6} {fmt(out['brisque'], 2):>8} {fmt(out['seconds_per_image'], 2):>6}")
    return 0


# Scores only: seconds per image depend on the machine's load and belong to `bench`.
EVAL_KEYS = ("method", "dataset", "split", "n", "sampler", "steps", "inr", "psnr", "ssim", "rmse", "niqe", "brisque")


def record_eval(result: dict, folder: Path, command: str) -> dict:
    """Put one ``eval`` result (without per-image rows) into ``folder``'s cloudrm.json "eval" list, replacing an
    entry for the same method, data, split and settings: the one place the About tab (and the README) read."""
    from .weights import read_meta, write_meta

    entry = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items() if k in EVAL_KEYS}
    entry["command"] = command
    same = ("method", "dataset", "split", "sampler", "steps", "inr")
    meta = read_meta(folder)
    meta["eval"] = [e for e in meta.get("eval") or [] if any(e.get(k) != entry.get(k) for k in same)] + [entry]
    write_meta(folder, meta)
    return entry


def samples(args: argparse.Namespace) -> int:
    from .samples import list_samples, notices

    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise ConfigError(f"{args.json}: output folder does not exist")
    found = list_samples()
    for note in notices():
        print(f"note: {note}", file=sys.stderr)
    for s in found:
        ref = "with reference" if s.reference else "no reference"
        print(f"{s.group:<11} {s.name:<44} {len(s.dates)} date(s), {ref}, preset {s.variant}  [{s.source}]")
    if args.json:
        Path(args.json).write_text(json.dumps([s.as_dict() for s in found], indent=1) + "\n")
    return 0


def bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(args)



def average(args: argparse.Namespace) -> int:
    from .training.average import average_folders

    command = "python -m cloudrm average " + " ".join(
        [*args.folders, "--part", args.part, *(["--shares", *map(str, args.shares)] if args.shares else []),
         "-o", args.output])
    meta = average_folders([Path(f) for f in args.folders], args.shares, args.part, Path(args.output), command)
    shares = ", ".join(f"{s['folder']} {s['share']:.2f}" for s in meta["averaged_from"])
    print(f"wrote {Path(args.output) / args.part} ({shares})")
    return 0
