"""``python -m cloudrm``: parse -> call the Python API -> print / save. No logic of its own.

User errors (``CloudRMError``) exit with code 2 and one ``error: ...`` line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from .errors import CloudRMError, one_line
from .runtime import tune_malloc


def _add_method_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="identity", help="identity, median, pixel-cr, idf-cr, diffcr")
    p.add_argument("--steps", type=int, default=None, help="sampler steps 1-50 (default: the method's)")
    p.add_argument("--sampler", default=None, help="dpmpp, ddim or ddpm (default: the method's)")
    p.add_argument("--inr", type=int, default=None, help="IDF-CR INR weights K in 1..3 (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed, 0..4294967295 (2**32 - 1)")
    p.add_argument("--weights", default=None, help="variant name, local folder or hub repo id owner/name[@rev]")
    p.add_argument("--samples", type=int, default=1, help="seeds to draw for the uncertainty map")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cloudrm", description="Remove clouds from satellite images (DiffCR, IDF-CR).")
    sub = ap.add_subparsers(dest="command", required=True)

    rm = sub.add_parser("remove", help="remove clouds from one scene (1-3 dates) or a batch of scenes")
    rm.add_argument("inputs", nargs="*", help="cloudy images of one place (dates)")
    rm.add_argument("-o", "--output", required=True, help="output .png/.tif (or a folder with --batch)")
    _add_method_flags(rm)
    rm.add_argument("--bands", default=None, help="bands to use, e.g. 4,3,2 or B04,B03,B02")
    rm.add_argument("--uncertainty", default=None, help="write the per-pixel std over --samples seeds here")
    rm.add_argument("--tile", type=int, default=512, help="tile size in pixels for large scenes")
    rm.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels")
    rm.add_argument("--batch", default=None, help="a list file or folder of scenes (output is then a folder)")

    ev = sub.add_parser("eval", help="score a method on a data folder, write JSON")
    _add_method_flags(ev)
    ev.add_argument("--data", required=True)
    ev.add_argument("--layout", default="auto", choices=["auto", "rice", "scenes", "sen2mtc"])
    ev.add_argument("--limit", type=int, default=None)
    ev.add_argument("--split", default="all", choices=["all", "val"],
                    help="'val': only the project's validation split of a RICE folder")
    ev.add_argument("--json", default=None)
    ev.add_argument("--record", action="store_true",
                    help="store the scores in the weights folder's cloudrm.json (its 'eval' list, which the app's "
                         "About tab shows): for maintainers refreshing the bundled weights' numbers")

    be = sub.add_parser("bench", help="speed, params, GMACs, peak memory")
    be.add_argument("--methods", default=None, help="comma-separated (default: the standard matrix)")
    be.add_argument("--size", type=int, default=None)
    be.add_argument("--dates", type=int, default=3)
    be.add_argument("--steps", type=int, default=None)
    be.add_argument("--sampler", default=None)
    be.add_argument("--weights", default=None)
    be.add_argument("--repeats", type=int, default=3)
    be.add_argument("--json", default=None)

    sm = sub.add_parser("samples", help="list the samples the registry finds")
    sm.add_argument("--json", default=None, help="also write them as JSON: name, group, dates, reference, "
                                                 "source, variant (the app's preset)")

    tr = sub.add_parser("train", help="train a model with accelerate")
    tr.add_argument("task", help="pixel-cr, diffcr, autoencoder, prior, controlnet")
    tr.add_argument("--config", required=True)
    tr.add_argument("--inr", type=int, default=None, help="controlnet: INR passes K per batch (1-3)")
    tr.add_argument("--max-minutes", type=float, default=None)
    tr.add_argument("--stop-at-step", type=int, default=None)
    tr.add_argument("--run-dir", default=None)
    tr.add_argument("--export-dir", default=None)
    tr.add_argument("--data-root", default=None)
    tr.add_argument("--mixed-precision", default=None, choices=["no", "bf16", "fp16"],
                    help="autocast: bf16 on CPUs with AMX/AVX512-BF16 (2-3x faster here), fp16 needs a GPU")

    av = sub.add_parser("average", help="average one part of several trained weights folders (a model soup)")
    av.add_argument("folders", nargs="+", help="weights folders trained from one ancestor (2 or more)")
    av.add_argument("-o", "--output", required=True, help="the weights folder to write (may be the first source)")
    av.add_argument("--part", default="pixel_cr", help="the subfolder to average (default: pixel_cr)")
    av.add_argument("--shares", type=float, nargs="+", default=None,
                    help="one share per folder, normalised to sum to 1 (default: equal)")
    return ap


class Terminated(BaseException):
    """SIGTERM, raised in the main thread: like Ctrl-C it unwinds through every writer, whose cleanup removes
    its temporary ``.part`` file (the default SIGTERM action would kill the process mid-write)."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_malloc()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return _dispatch(args)
    except CloudRMError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("error: terminated", file=sys.stderr)
        return 143
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "train":
        from .training.loop import TrainConfig, train

        over = {"max_minutes": args.max_minutes, "stop_at_step": args.stop_at_step, "run_dir": args.run_dir,
                "export_dir": args.export_dir, "data_root": args.data_root,
                "mixed_precision": args.mixed_precision}
        if not Path(args.config).exists():
            from .errors import ConfigError
            raise ConfigError(f"{args.config}: config file not found")
        cfg = TrainConfig.from_file(args.config, **over)
        if cfg.task != args.task:
            from .errors import ConfigError
            raise ConfigError(f"{args.config} is a '{cfg.task}' config, not '{args.task}'")
        if args.inr is not None:
            cfg.task_options["inr"] = args.inr
        print(json.dumps(train(cfg)))
        return 0
    from . import commands

    return getattr(commands, args.command)(args)
