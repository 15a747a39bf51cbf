"""What a web service around cloudrm needs besides running methods: the policy for a remote user's options
(choices checked against their lists, weights limited to bundled variants unless the operator allows paths),
one-line messages without server paths, bounded per-request folders, sample copies, method status and the
About text. Nothing here imports gradio; ``app.py`` lays out what these return.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import io, weights as weights_mod
from .errors import ConfigError, InputError, WeightsError, one_line
from .methods import METHODS, load_method, method_class
from .methods.base import SEED_MAX, check_seed
from .sampling import MAX_STEPS, SAMPLERS

#: Every bundled variant name of any method: what a remote user may choose as weights.
VARIANT_NAMES: tuple[str, ...] = tuple(dict.fromkeys(v for _, _, vs in weights_mod.VARIANTS.values() for v in vs))
#: Environment variable with which an operator lets remote users name weights folders and hub repo ids.
ALLOW_PATHS_ENV = "CLOUDRM_ALLOW_WEIGHTS_PATHS"
#: The one message for every weights folder or hub id that cannot be used: it must not tell which paths exist.
UNUSABLE_WEIGHTS = "weights: not a usable cloudrm weights folder or hub repo id on this server"
#: Methods preset when a sample of a group is picked: what works for that kind of cloud (DiffCR's bundled
#: weights smear RICE1's thin clouds; DiffCR's default weights are Sentinel-2's, and median uses several dates).
GROUP_METHODS = {"RICE1": ("pixel-cr", "idf-cr"), "RICE2": ("pixel-cr", "diffcr"),
                 "Sentinel-2": ("median", "diffcr")}
UPLOAD_METHODS = ("pixel-cr", "diffcr")
#: The app's speed/quality presets: sampler steps per method. From the quality-vs-steps curve on the real
#: Sentinel-2 validation regions (README "Real Sentinel-2 clouds", quality against steps; notebook 04, section 5):
#: diffcr's one step has the lowest NIQE on single real dates (its PSNR is flat there) and 4-10 steps score best
#: on 3-date stacks, 50 steps no higher than 20 anywhere (the slow end of the range); idf-cr's PSNR is flat from
#: 5 to 50 steps and 10 steps cost a fifth. "default" is each method's own default (the contract's).
QUALITY_PRESETS: dict[str, dict[str, int]] = {
    "fast": {"diffcr": 1, "idf-cr": 10},
    "default": {m: method_class(m).default_steps for m in ("diffcr", "idf-cr")},
    "detailed": {"diffcr": MAX_STEPS, "idf-cr": MAX_STEPS},
}


# ----------------------------------------------------------------------------------------------- options
def allow_weight_paths() -> bool:
    """Whether the operator allows weights folders and hub ids from remote users (read at each call)."""
    return os.environ.get(ALLOW_PATHS_ENV, "").strip().lower() in ("1", "true", "yes")


def blank(v: Any) -> Any:
    """None for None, empty text and the words none/null/default; other values unchanged (text stripped)."""
    if isinstance(v, str):
        v = v.strip()
        return None if v.lower() in ("", "none", "null", "default") else v
    return v


def check_choice(value: Any, choices: Sequence[str], what: str) -> str | None:
    """``value`` if it is one of ``choices`` (None when blank); the message never repeats what was sent."""
    value = blank(value)
    if value is None or (isinstance(value, str) and value in choices):
        return value
    raise ConfigError(f"unknown {what} (use {', '.join(choices)})")


def parse_int(value: Any, what: str, lo: int, hi: int) -> int | None:
    """An integer option in lo..hi from a number or text; None when blank; else one line without the value."""
    value = blank(value)
    if value is None:
        return None
    try:
        f = float(value) if not isinstance(value, (int, np.integer)) else int(value)
    except (TypeError, ValueError, OverflowError):
        f = None
    if isinstance(f, float) and not (np.isfinite(f) and f.is_integer()):
        f = None
    if f is None or isinstance(value, bool) or not lo <= int(f) <= hi:
        raise ConfigError(f"{what} must be an integer in {lo}..{hi}")
    return int(f)


def parse_seed(value: Any) -> int:
    return check_seed(parse_int(value, "seed", 0, SEED_MAX) or 0)


def parse_options(sampler: Any = None, steps: Any = None, inr: Any = None) -> dict[str, Any]:
    """Sampler, steps and INR K checked against their lists and ranges (None = the method's default)."""
    return {"sampler": check_choice(sampler, SAMPLERS, "sampler"), "steps": parse_int(steps, "steps", 1, MAX_STEPS),
            "inr": parse_int(inr, "inr", 1, 3)}


def weights_spec(method: str, choice: Any) -> str | None:
    """The weights spec for ``method`` from a remote user's choice: a bundled variant (or blank/default);
    a folder or hub id only when :func:`allow_weight_paths`."""
    choice = blank(choice)
    if choice is None or choice in VARIANT_NAMES:
        return weights_mod.spec_for(method, choice)
    if not allow_weight_paths():
        raise WeightsError(f"weights must be default or a bundled variant ({', '.join(VARIANT_NAMES)}); "
                           f"weights folders and hub repo ids are off on this server")
    if not isinstance(choice, str) or len(choice) > 300:
        raise WeightsError(UNUSABLE_WEIGHTS)
    return choice if method in weights_mod.VARIANTS else None


def load(method: str, choice: Any, device: Any = None):
    """The loaded method for a remote user's weights choice; a folder or hub id that fails for any reason
    gives :data:`UNUSABLE_WEIGHTS`, the same for every path."""
    check_choice(method, METHODS, "method")
    spec = weights_spec(method, choice)
    user_path = spec is not None and spec not in VARIANT_NAMES
    try:
        return load_method(method, spec, device), spec
    except (WeightsError, OSError, ValueError):
        if user_path:
            raise WeightsError(UNUSABLE_WEIGHTS) from None
        raise


# ----------------------------------------------------------------------------------------------- text
#: An absolute path (a "/" not preceded by a name character, up to whitespace, quote or colon). One greedy class
#: and nothing after it: linear time on any text (the old nested pattern took 24 s on 40 slashes).
_ABS_PATH = re.compile(r"(?<![\w.-])/[^\s:'\"]*")


def clean_message(msg: str, paths: Sequence[Any] = (), root: str | os.PathLike | None = None,
                  limit: int = 300) -> str:
    """One line of at most ``limit`` characters with server paths shown as file names: the ``paths`` the
    user sent by name, files under ``root`` relative to it, any other absolute path by its last part."""
    lines = [s.strip() for s in str(msg).splitlines() if s.strip()]
    msg = (lines[0] if lines else "")[: 4 * limit]
    for p in sorted({str(p) for p in paths if p}, key=len, reverse=True):
        msg = msg.replace(p, Path(p).name)
    if root is not None:
        msg = msg.replace(str(root) + os.sep, "")
    msg = _ABS_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "/", msg)
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


# ----------------------------------------------------------------------------------------------- disk
class ResultStore:
    """Per-request folders under ``root``, bounded in age and in total size.

    Old folders go first (older than ``max_age`` seconds, then the oldest while the total exceeds
    ``max_bytes``). :meth:`new` prunes, and :meth:`start` prunes every ``interval`` seconds on a daemon thread,
    so disk is freed even when no request arrives. Write results straight into these folders under the web
    framework's own cache folder and they are served from there without a second copy."""

    def __init__(self, root: str | os.PathLike, max_bytes: int = 512 * 2**20, max_age: float = 3600.0,
                 interval: float = 60.0):
        self.root = Path(root)
        self.max_bytes, self.max_age, self.interval = int(max_bytes), float(max_age), float(interval)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def new(self) -> Path:
        self.prune()
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="req-", dir=self.root))

    def _folders(self) -> list[tuple[float, int, Path]]:
        out = []
        for d in self.root.glob("req-*"):
            try:
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                out.append((d.stat().st_mtime, size, d))
            except OSError:  # removed meanwhile
                continue
        return sorted(out)

    def usage(self) -> int:
        """Bytes in the request folders now."""
        return sum(size for _, size, _ in self._folders())

    def prune(self) -> int:
        """Remove expired folders, then the oldest until under ``max_bytes``; returns the bytes freed."""
        freed = 0
        with self._lock:
            folders = self._folders()
            total = sum(size for _, size, _ in folders)
            now = time.time()
            for mtime, size, d in folders:
                if now - mtime > self.max_age or total > self.max_bytes:
                    shutil.rmtree(d, ignore_errors=True)
                    total -= size
                    freed += size
        return freed

    def start(self) -> None:
        """Prune on a timer (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="cloudrm-results-janitor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.prune()
            except Exception:  # never let the janitor die on a transient filesystem error
                pass



# ----------------------------------------------------------------------------------------------- about
def _training_text(meta: dict[str, Any]) -> str:
    parts = []
    for sub, c in (meta.get("components") or {"": meta}).items():
        if not isinstance(c, dict) or c.get("folder"):
            continue
        bits = [f"{c['trained_steps']} steps" if c.get("trained_steps") is not None else "",
                f"{int(c['train_minutes'] + 0.5)} min" if c.get("train_minutes") is not None else ""]
        if any(bits):
            parts.append(f"{sub or 'model'} {', '.join(b for b in bits if b)}")
    return "; ".join(parts) or "-"


def weights_table() -> str:
    """Markdown: each bundled weights folder's ``eval`` results from its ``cloudrm.json`` (the numbers
    ``python -m cloudrm eval`` gives and the README quotes), and how long each part trained. Validation
    scores logged during training are not shown: they use other settings than ``eval`` and are not comparable."""
    rows, seen = [], set()
    for method in weights_mod.VARIANTS:
        for variant in weights_mod.variants_present(method):
            folder = weights_mod.bundled_dir(method, variant)
            if folder in seen:
                continue
            seen.add(folder)
            name = f"{folder.parent.name}/{variant}"
            try:
                meta = weights_mod.read_meta(folder)
            except WeightsError:
                rows.append(f"| {name} | - | cloudrm.json unreadable | - | - | - | - | - |")
                continue
            train = _training_text(meta)
            evals = [e for e in meta.get("eval") or [] if isinstance(e, dict)]
            if not evals:
                rows.append(f"| {name} | - | not measured with `eval` yet | - | - | - | - | {train} |")
            for e in evals:
                how = ", ".join(x for x in (
                    str(e.get("method", "?")),
                    f"{e['sampler']} {e['steps']} steps" if e.get("sampler") and e.get("steps") else "",
                    f"K={e['inr']}" if e.get("inr") else "") if x)
                data = f"{e.get('dataset', '?')} {e.get('split', '')} ({e.get('n', '?')})".replace(" all ", " ")
                rows.append(f"| {name} | {how} | {data} | {_fmt(e.get('psnr'), 2)} | {_fmt(e.get('ssim'), 3)} | "
                            f"{_fmt(e.get('niqe'), 2)} | {_fmt(e.get('brisque'), 2)} | {train} |")
                train = ""
    if not rows:
        return "_No bundled weights in this installation: only identity and median run._"
    return ("| weights | method, settings | data (images) | PSNR (dB) | SSIM | NIQE | BRISQUE | training |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def _fmt(v: float | None, nd: int) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


# ----------------------------------------------------------------------------------------------- inputs
def check_files(paths: Sequence[str], reference: Sequence[str] = (), max_side: int = 1024,
                max_dates: int = 3) -> None:
    """Count and size checks that decode nothing (sizes from the file headers), as one-line InputErrors."""
    if not paths:
        raise InputError(f"no input image: upload 1 to {max_dates} cloudy dates of one place (PNG, JPEG, TIFF) "
                         f"or pick a sample")
    if len(paths) > max_dates:
        raise InputError(f"got {len(paths)} images; give 1 to {max_dates} dates of one place")
    if len(reference) > 1:
        raise InputError("give one reference image")
    for p in [*paths, *reference]:
        size = io.probe_size(p)
        if size is not None and max(size) > max_side:
            raise InputError(f"{Path(p).name} is {size[0]}x{size[1]} px; this app accepts images up to {max_side} "
                             f"px a side (use the CLI, python -m cloudrm remove, for larger scenes)")


# ----------------------------------------------------------------------------------------------- methods
DEEP = tuple(weights_mod.VARIANTS)
_status_lock = threading.Lock()
_status: dict[tuple, str | None] = {}


def method_status(name: str, device: Any = None) -> str | None:
    """None when ``name`` runs with its bundled weights, else a one-line reason. The weights are loaded once
    (then cached); the answer is remembered per weights folder and cloudrm.json modification time, so weights
    that appear or change while a server runs are picked up."""
    if name not in DEEP:
        return None
    spec = weights_mod.spec_for(name, None)
    folder = weights_mod.bundled_dir(name, spec or weights_mod.VARIANTS[name][1])
    try:
        key = (name, spec, str(device), (folder / "cloudrm.json").stat().st_mtime_ns)
    except OSError:
        return "its bundled weights are not in this installation"
    with _status_lock:
        if key in _status:
            return _status[key]
    try:
        load_method(name, spec, device)
        why = None
    except Exception as exc:  # a broken file must not take a page down
        why = f"weights do not load: {clean_message(one_line(exc))}"
    with _status_lock:
        _status[key] = why
    return why


def preset_methods(group: str | None, available: Sequence[str]) -> list[str]:
    """The methods to tick for a sample group (what works for its clouds), or for an upload (group None)."""
    return [m for m in GROUP_METHODS.get(group or "", UPLOAD_METHODS) if m in available] or ["median"]


# ----------------------------------------------------------------------------------------------- samples
def sample_files(sample, root: Path) -> tuple[list[str], str | None, str]:
    """Copies of a sample's dates and reference under ``root`` (a web server serves only its own folders), and
    a PNG thumbnail of date 1. Copies are made once, atomically, and re-made if something deleted them."""
    folder = root / hashlib.sha1(f"{sample.source}:{sample.name}".encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)

    def copy(src: str, name: str) -> str:
        dst = folder / name
        if not dst.exists():
            tmp = folder / f".{name}.{threading.get_ident()}.part"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        return str(dst)

    names = [Path(d).name for d in sample.dates]
    if len(set(names)) < len(names):
        names = [f"date{i + 1}_{n}" for i, n in enumerate(names)]
    dates = [copy(d, n) for d, n in zip(sample.dates, names)]
    ref = copy(sample.reference, f"reference_{Path(sample.reference).name}") if sample.reference else None
    thumb = folder / "thumb.png"
    if not thumb.exists():
        io.write_image(thumb, io.as_rgb(io.to_display(io.read_image(dates[0]))))
    return dates, ref, str(thumb)


# ----------------------------------------------------------------------------------------------- about text
ABOUT_METHODS = """\
- **identity** returns the first cloudy date unchanged: the floor every method has to beat.
- **median** takes the per-pixel median of the dates (their mean for two dates); with one date it is the identity.
- **Pixel-CR** is IDF-CR's first stage: a Swin-style network that removes clouds in one forward pass and
  predicts where the clouds are (the *cloud-attention map*).
- **IDF-CR** refines Pixel-CR's output with a latent diffusion model steered by a ControlNet; *INR K* is the number
  of in-context training passes per batch (K = 1 is plain ControlNet training).
- **DiffCR** is a conditional diffusion model that predicts the clear image from 1-3 cloudy dates, with the
  condition encoder run once per image; sampled with DPM-Solver++ (default, 20 steps), DDIM or DDPM (1 step =
  one direct prediction). With one date, the Sentinel-2 weights start from that direct prediction and run only the
  last 30 % of the steps (left alone, the sampler invents a colour balance of its own). Several seeds give an
  *uncertainty map*: the per-pixel standard deviation.
"""


def about_markdown(version: str, status: dict[str, str | None], notebooks: str, max_side: int,
                   max_dates: int) -> str:
    """The About tab: methods, what runs here, the weights' eval numbers, notebooks, limits."""
    lines = "\n".join(f"- `{m}`: " + ("available" if why is None else f"unavailable ({why})")
                      for m, why in status.items())
    return (f"## cloudrm {version}\n\nRemoves clouds from optical satellite images: one to three cloudy dates "
            f"of one place in, one cloud-free estimate out.\n\n### Methods\n{ABOUT_METHODS}\n### In this app\n"
            f"{lines}\n\n### Weights\nScores from `python -m cloudrm eval` on this repository's held-out splits, "
            f"as each weights folder's `cloudrm.json` records them (the README quotes the same numbers).\n\n"
            f"{weights_table()}\n\n### Notebooks\n{notebooks}\n\n### Limits\nImages up to {max_side} px a side "
            f"(larger ones are refused; the CLI tiles any size), uploads up to 20 MB, 1-{max_dates} dates. "
            f"PSNR/SSIM/RMSE are computed on the 8-bit PNG output against the reference. NIQE and BRISQUE need "
            f"no reference: lower usually means more natural-looking; BRISQUE can drop below 0 on very smooth "
            f"images, so use it to compare methods rather than read it alone.\n")
