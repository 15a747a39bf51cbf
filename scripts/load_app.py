"""Load and abuse checks for the web app (issue 14), against ``python app.py`` in a subprocess on 127.0.0.1.

    python scripts/load_app.py [--calls 300] [--json out.json]

Measures: the answer time for a sampler / weights string of 40 slashes; the server's RSS growth over 12
spellings of one weights folder (pixel-cr) and 8 (idf-cr), with the operator switch that allows folders; a
20-job burst from one client (how many were refused, and whether a page load and another client's call still
work meanwhile); the disk used by results over ``--calls`` calls with a 50 MB bound. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _du_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20 if folder.exists() else 0.0


def _png(path: Path, size: int, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import httpx
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    from cloudrm import weights

    work = Path(tempfile.mkdtemp(prefix="cloudrm-load-"))
    cache = work / "gradio"
    port = _free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_TEMP_DIR=str(cache),
               CLOUDRM_ALLOW_WEIGHTS_PATHS="1", CLOUDRM_RESULTS_MB="50", HF_HUB_OFFLINE="1")
    server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    out: dict = {}
    try:
        for _ in range(600):
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        client = Client(url, verbose=False, analytics_enabled=False)
        small = _png(work / "small.png", 64)
        mid = _png(work / "mid.png", 256, seed=1)

        def call(c=client, images=(small,), **kw):
            return c.predict(images=[handle_file(str(p)) for p in images], api_name="/remove_clouds",
                             **{"method": "identity", **kw})

        # 1. forty slashes in the sampler and in the weights
        for field in ("sampler", "weights"):
            t0 = time.perf_counter()
            try:
                call(**{field: "/x" + "/" * 38, "method": "diffcr" if field == "sampler" else "pixel-cr"})
            except AppError as exc:
                out[f"slashes_{field}_message"] = exc.message
            out[f"slashes_{field}_s"] = round(time.perf_counter() - t0, 3)

        # 2. one weights folder spelled 12 ways (pixel-cr) and 8 ways (idf-cr)
        folder = str(weights.bundled_dir("pixel-cr", "rice2"))
        spellings = [folder, folder + "/", folder + "//", folder.replace("/", "//"), folder + "/.", folder + "/./",
                     f"{folder}/../rice2", f"{folder}/../rice2/", folder.replace("/", "///"), "/" + folder,
                     folder + "/./.", f"{folder}/../../idfcr/rice2"]
        call(method="pixel-cr", weights=folder)
        rss0 = _rss_mb(server.pid)
        for s in spellings:
            call(method="pixel-cr", weights=s)
        out["rss_12_pixelcr_spellings_mb"] = round(_rss_mb(server.pid) - rss0, 1)
        call(method="idf-cr", weights=folder, steps=2)
        rss0 = _rss_mb(server.pid)
        for s in spellings[:8]:
            call(method="idf-cr", weights=s, steps=2)
        out["rss_8_idfcr_spellings_mb"] = round(_rss_mb(server.pid) - rss0, 1)

        # 3. one client bursts 20 diffcr jobs; a page load and another client meanwhile
        hog = Client(url, verbose=False, analytics_enabled=False)
        jobs = [hog.submit(images=[handle_file(str(mid))], method="diffcr", steps=20, api_name="/remove_clouds")
                for _ in range(20)]
        time.sleep(1)
        t0 = time.perf_counter()
        out["burst_page_load_status"] = httpx.get(url, timeout=30).status_code
        out["burst_page_load_s"] = round(time.perf_counter() - t0, 3)
        other = Client(url, verbose=False, analytics_enabled=False)
        t0 = time.perf_counter()
        call(c=other)
        out["burst_other_client_identity_s"] = round(time.perf_counter() - t0, 2)
        done = refused = 0
        for job in jobs:
            try:
                job.result(timeout=600)
                done += 1
            except QueueError:
                refused += 1
        out["burst_accepted"], out["burst_refused"] = done, refused

        # 4. disk used by results over many calls (256 px outputs, bound 50 MB)
        peak = 0.0
        t0 = time.perf_counter()
        for i in range(args.calls):
            call(images=(mid,), method="identity" if i % 2 else "median", seed=i)
            if i % 10 == 0:
                peak = max(peak, _du_mb(cache / "cloudrm-results"))
        out["calls"] = args.calls
        out["calls_s"] = round(time.perf_counter() - t0, 1)
        out["results_peak_mb"] = round(peak, 1)
        out["results_end_mb"] = round(_du_mb(cache / "cloudrm-results"), 1)
        out["gradio_cache_end_mb"] = round(_du_mb(cache), 1)
        out["server_rss_end_mb"] = round(_rss_mb(server.pid), 1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
