"""Set-up and display helpers shared by the four teaching notebooks (their first code cell imports this module).

Importing it starts the run-time clock that the last cell reports (``print_runtime``), reads the smoke switch
(``CLOUDRM_SMOKE=1``: tiny sizes, few iterations and steps, what CI runs), keeps the hub offline, puts the
repository on ``sys.path`` (a plain checkout works without ``pip install -e .``), finds the data root and makes a
scratch folder outside the repository. The helpers only draw and print: models, losses and samplers all come from
the ``cloudrm`` package, never from here.
"""
from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
import warnings
from io import BytesIO
from pathlib import Path


def _cpu_seconds() -> float:
    return sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime
               for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


_T0, _CPU0 = time.perf_counter(), _cpu_seconds()
SMOKE = os.environ.get("CLOUDRM_SMOKE") == "1"   # CI's small mode: tiny sizes, few iterations and steps
os.environ.setdefault("HF_HUB_OFFLINE", "1")      # nothing in these notebooks needs the network
for _module in ("torch", "diffusers", "accelerate", "huggingface_hub", "skimage", "rasterio", "tqdm"):
    warnings.filterwarnings("ignore", module=_module)
warnings.filterwarnings("ignore", category=FutureWarning)

NB_DIR = Path(__file__).resolve().parent
REPO = next((p for p in (NB_DIR, *NB_DIR.parents) if (p / "cloudrm" / "__init__.py").is_file()), NB_DIR.parent)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def find_data_root() -> Path | None:
    """$CLOUDRM_DATA, else ../../shared/data beside the notebooks; None (with one line) when absent."""
    env = os.environ.get("CLOUDRM_DATA")
    candidates = [Path(env), REPO / env] if env else [NB_DIR / ".." / ".." / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    print(f"No data root ({'$CLOUDRM_DATA' if env else '../../shared/data'} not found): "
          "the sections below use built-in synthetic samples instead.")
    return None


DATA = find_data_root()
if DATA is not None:
    os.environ["CLOUDRM_DATA"] = str(DATA)   # the package (samples, training tasks) reads it from here

import matplotlib.pyplot as plt  # noqa: E402  (after the warning filters and sys.path above)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from IPython.display import Image, display  # noqa: E402

import cloudrm  # noqa: E402

torch.manual_seed(0)
plt.rcParams.update({"figure.dpi": 72, "axes.grid": True, "grid.alpha": 0.3, "image.interpolation": "nearest"})
WORK = Path(tempfile.mkdtemp(prefix="cloudrm-nb-"))   # scratch space (checkpoints, exports), outside the repository


def banner() -> None:
    """One line: versions, threads, mode and data source (the setup cell's output)."""
    print(f"cloudrm {cloudrm.__version__} | torch {torch.__version__}, {torch.get_num_threads()} threads | "
          f"{'SMOKE' if SMOKE else 'full'} mode | data: {'the shared data root' if DATA else 'built-in samples'}")


def print_runtime() -> None:
    """The last cell's line; ``notebooks/postprocess.py`` copies it into the run-time line at the top."""
    cpu, wall = _cpu_seconds() - _CPU0, time.perf_counter() - _T0
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"Run time of this notebook: {wall:.0f} s wall-clock, {cpu:.0f} s CPU "
          f"({'smoke' if SMOKE else 'full'} mode, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, "
          f"GPU {gpu})")


# ------------------------------------------------------------------------------------------- display helpers
def to_hwc(img):
    """(C,H,W) or (H,W) array/tensor in [0,1] -> something imshow understands."""
    a = img.detach().float().cpu().numpy() if torch.is_tensor(img) else np.asarray(img, dtype=np.float32)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else a[:3].transpose(1, 2, 0)
    return a


def show_jpeg(fig, quality=90):
    """Show a figure of pictures as a JPEG (photographs in PNG would make the notebook several MB)."""
    buf = BytesIO()
    fig.savefig(buf, format="jpeg", dpi=72, bbox_inches="tight", pil_kwargs={"quality": quality})
    plt.close(fig)
    display(Image(data=buf.getvalue(), format="jpeg"))


def pictures(rows, titles=None, row_labels=None, size=2.4, suptitle=None):
    """A grid of images. Each cell: an array, None (blank) or (array, dict(cmap=, vmin=, vmax=, cbar=label))."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.axis("off")
            if titles is not None and i == 0 and j < len(titles):
                ax.set_title(titles[j], fontsize=9)
            cell = row[j] if j < len(row) else None
            if cell is None:
                continue
            img, opts = cell if isinstance(cell, tuple) else (cell, {})
            im = ax.imshow(to_hwc(img), cmap=opts.get("cmap", "gray"), vmin=opts.get("vmin", 0),
                           vmax=opts.get("vmax", 1))
            if opts.get("cbar"):
                cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
                cb.set_label(opts["cbar"], fontsize=8)
            if opts.get("title"):
                ax.set_title(opts["title"], fontsize=8)
        if row_labels is not None:
            axes[i, 0].text(-0.06, 0.5, row_labels[i], transform=axes[i, 0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    show_jpeg(fig)


def rel(path):
    """A path for printing: relative to the data root, the repository or the scratch folder (never a home path)."""
    p = Path(path).resolve()
    for base, name in ((DATA, "$CLOUDRM_DATA"), (WORK, "<scratch>"), (REPO, "<repo>")):
        if base is not None:
            try:
                return f"{name}/{p.relative_to(Path(base).resolve())}"
            except ValueError:
                pass
    return p.name


def center_crop(a, size):
    """The central size x size window of (..., H, W) data (a no-op when the image is not larger)."""
    h, w = a.shape[-2:]
    y, x = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return a[..., y:y + size, x:x + size]


def shipped(method, variant, parts):
    """The bundled weights folder when it holds every part, else None (saying so in one line)."""
    from cloudrm import weights
    folder = weights.bundled_dir(method, variant)
    missing = [p for p in parts if not (folder / p / "config.json").is_file()]
    if not (folder / "cloudrm.json").is_file() or missing:
        print(f"Shipped {method} weights '{variant}' are not in this checkout ({rel(folder)} lacks "
              f"{', '.join(missing) if missing else 'cloudrm.json'}); continuing without them.")
        return None
    return folder


def builtin_data_root(n_clear=24, n_pairs=16, n_scenes=3, size=128):
    """A tiny data root of synthetic scenes, used only when no real data is present: CLEAR/ (clear images),
    SYNTH_PAIRS/{cloud,label}/ (the RICE layout) and SYNTH_SCENES/<scene>/cloudy_*.png + clear.png (3 dates)."""
    from cloudrm import io as cio
    from cloudrm import synth
    root = WORK / "builtin-data"
    if (root / "SYNTH_SCENES").is_dir():
        return root
    rng = np.random.default_rng(0)
    for sub in ("CLEAR", "SYNTH_PAIRS/cloud", "SYNTH_PAIRS/label"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_clear):
        cio.write_image(root / "CLEAR" / f"{i}.png", synth.demo_scene(1000 + i, size))
    for i in range(n_pairs):
        clear = synth.demo_scene(2000 + i, size)
        cloudy, _ = synth.add_clouds(clear, rng)
        cio.write_image(root / "SYNTH_PAIRS" / "cloud" / f"{i}.png", cloudy)
        cio.write_image(root / "SYNTH_PAIRS" / "label" / f"{i}.png", clear)
    for i in range(n_scenes):
        clear = synth.demo_scene(3000 + i, size)
        dates, _ = synth.multi_temporal(clear, 3, rng)
        (root / "SYNTH_SCENES" / f"scene{i}").mkdir(parents=True, exist_ok=True)
        for k, d in enumerate(dates):
            cio.write_image(root / "SYNTH_SCENES" / f"scene{i}" / f"cloudy_{k}.png", d)
        cio.write_image(root / "SYNTH_SCENES" / f"scene{i}" / "clear.png", clear)
    return root
