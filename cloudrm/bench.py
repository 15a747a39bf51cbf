"""``python -m cloudrm bench``: seconds, params, GMACs and peak memory per method and setting.

Each row runs in a fresh process (peak RSS is per process). ``gmacs`` is ONE network evaluation (diffcr:
the denoiser plus the condition encoder for the given dates; idf-cr: the prior U-Net + ControlNet step),
``gmacs_total`` the whole image; both come from torch's FLOP counter (MACs = FLOPs / 2).
``reference_gflops`` is the machine's fp32 2048x2048 matmul speed with the threads torch uses, so numbers
from different machines can be compared.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .methods import load_method
from .runtime import tune_malloc

STANDARD = [("diffcr", 3, 1, "dpmpp"), ("diffcr", 3, 20, "dpmpp"), ("pixel-cr", 1, None, None),
            ("idf-cr", 1, 50, "ddpm")]


def reference_gflops() -> float:
    import torch

    a = torch.rand(2048, 2048)
    a @ a
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        a @ a
        best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9)
    return round(best, 1)


def measure(method: str, size: int, dates: int, steps: int | None, sampler: str | None, weights: str | None,
            repeats: int) -> dict:
    """One row, measured in this process."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    tune_malloc()  # as the CLI and the app run
    m = load_method(method, weights)
    rng = np.random.default_rng(0)
    x = [rng.random((3, size, size), dtype=np.float32) for _ in range(dates)]
    kw = {"steps": steps, "sampler": sampler} if m.stochastic else {}
    run = m.settings(sampler, steps, None) if m.stochastic else {}  # the defaults filled in, for the row
    m(x, **kw)  # warm-up (also loads lazily built parts)
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        m(x, seed=r, **kw)
        times.append(time.perf_counter() - t)
    with FlopCounterMode(display=False) as fc:
        m(x, **kw)
    total = fc.get_total_flops() / 2e9
    n_eval = steps if (m.stochastic and steps) else 1
    params = sum(p.numel() for mod in _modules(m) for p in mod.parameters())
    if method == "diffcr":
        with FlopCounterMode(display=False) as fc:
            m(x, steps=1)
        one = fc.get_total_flops() / 2e9
    elif method == "idf-cr":
        one = m.step_gmacs(x) if hasattr(m, "step_gmacs") else None
    else:
        one = total / n_eval
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "size": size, "dates": dates, "steps": run.get("steps"), "sampler": run.get("sampler"),
            "seconds_median": round(statistics.median(times), 4),
            "params": int(params), "gmacs": None if one is None else round(one, 3), "gmacs_total": round(total, 3),
            "peak_rss_mb": round(rss, 1), "threads": torch.get_num_threads(), "weights": m.weights_id}


def _modules(m):
    import torch

    return [v for v in vars(m).values() if isinstance(v, torch.nn.Module)]


def run_bench(args: argparse.Namespace) -> int:
    if args.methods:
        rows = [(name.strip(), args.dates if name.strip() in ("diffcr", "median") else 1, args.steps, args.sampler)
                for name in args.methods.split(",")]
        sizes = [args.size or 256]
    else:
        rows = STANDARD
        sizes = [args.size] if args.size else [256, 512]
    results = []
    for size in sizes:
        for method, dates, steps, sampler in rows:
            steps = args.steps if args.steps is not None and args.methods is None and method != "pixel-cr" else steps
            cmd = [sys.executable, "-c",
                   "import json,sys; from cloudrm.bench import measure; "
                   f"print('BENCH'+json.dumps(measure({method!r}, {size}, {dates}, {steps!r}, {sampler!r}, "
                   f"{args.weights!r}, {args.repeats})))"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [l for l in proc.stdout.splitlines() if l.startswith("BENCH")]
            if proc.returncode != 0 or not line:
                err = (proc.stderr.strip().splitlines() or ["failed"])[-1]
                results.append({"method": method, "size": size, "dates": dates, "steps": steps, "sampler": sampler,
                                "error": err})
                print(f"{method:<9} {size:>4}px  error: {err}", file=sys.stderr)
                continue
            r = json.loads(line[0][5:])
            results.append(r)
            how = f"{r['sampler']} {r['steps']} step{'s' if r['steps'] != 1 else ''}" if r["steps"] else "one pass"
            print(f"{r['method']:<9} {size:>4}px dates {r['dates']} {how:>15}: "
                  f"{r['seconds_median']:.3f} s  {r['params'] / 1e6:.2f} M params  {r['gmacs']} GMACs/eval  "
                  f"{r['gmacs_total']} GMACs total  {r['peak_rss_mb']:.0f} MB")
    out = {"results": results, "reference_gflops": reference_gflops()}
    print(f"reference fp32 matmul: {out['reference_gflops']} GFLOP/s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0
