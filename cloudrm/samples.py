"""The sample registry for the app and the CLI: data root, hub dataset, built-in synthetic samples.

1. ``CLOUDRM_DATA`` (a local data root with RICE1/, RICE2/, Sen2_MTC_*_fig/ folders): a few of each, taken
   from the project's *validation* split so the app never shows a training image as a test.
2. ``CLOUDRM_SAMPLES_REPO`` (a Hugging Face dataset repo with the same layout): downloaded lazily, at most
   once per process, with short timeouts; offline or unreachable -> a one-line notice, then (3).
3. Built-in samples: real Sentinel-2 clouds from SEN12MS-CR (CC-BY 4.0, ``assets/samples/`` with its
   ATTRIBUTION.md, written by ``scripts/make_samples.py`` from validation regions). Where that folder is absent
   (an installed wheel), synthetic samples made at run time from noise landscapes and the cloud generator.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import io, synth
from .errors import one_line
from .weights import hub_snapshot
from .datasets import VAL_FRACTION, data_root, rice_pairs, scene_folders, split_names

GROUPS = {"RICE1": "RICE1 (thin clouds)", "RICE2": "RICE2 (thick clouds)", "Sentinel-2": "Sentinel-2 (real clouds)"}
#: weights variant that suits each group (the app presets it)
GROUP_VARIANT = {"RICE1": "rice1", "RICE2": "rice2", "Sentinel-2": "sen2"}


@dataclass(frozen=True)
class Sample:
    name: str
    group: str                    # RICE1, RICE2 or Sentinel-2
    dates: tuple[str, ...]        # image files, 1-3 dates
    reference: str | None         # the cloud-free image, when known
    source: str                   # "data root", "hub:<repo>", "built-in"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def variant(self) -> str:
        """The weights variant the app presets for this sample."""
        return GROUP_VARIANT.get(self.group, "rice2")

    def as_dict(self) -> dict:
        """The ``samples --json`` record."""
        return {"name": self.name, "group": self.group, "dates": list(self.dates), "reference": self.reference,
                "source": self.source, "variant": self.variant, "notes": list(self.notes)}


_lock = threading.Lock()
_hub_cache: dict[str, Path | None] = {}
_notices: list[str] = []


def notices() -> list[str]:
    """One-line notices about sources that could not be used (e.g. an unreachable hub repo)."""
    return list(_notices)


def _from_root(root: Path, source: str, per_group: int) -> list[Sample]:
    out: list[Sample] = []
    for name in ("RICE1", "RICE2"):
        d = root / name
        if (d / "cloud").is_dir() and (d / "label").is_dir():
            pairs = rice_pairs(d)
            _, val = split_names([n for n, _, _ in pairs], VAL_FRACTION.get(name, 0.15))
            keep = set(val[:per_group])
            out += [Sample(f"{name} #{n}", name, (str(c),), str(l), source) for n, c, l in pairs if n in keep]
    for d in sorted(root.glob("Sen2_MTC_*_fig")):
        for name, dates, clear in scene_folders(d)[:per_group]:
            out.append(Sample(f"{d.name.replace('_fig', '')} {name}", "Sentinel-2", tuple(map(str, dates)),
                              str(clear) if clear else None, source))
    return out


def _hub_root(repo: str) -> Path | None:
    """Snapshot of the hub samples dataset, once per process; None (with a notice) when unreachable."""
    with _lock:
        if repo in _hub_cache:
            return _hub_cache[repo]
        try:
            path: Path | None = hub_snapshot(repo, repo_type="dataset")
        except Exception as exc:
            msg = one_line(exc)
            _notices.append(f"samples repo '{repo}' unavailable ({msg[:120]}); using built-in samples")
            path = None
        _hub_cache[repo] = path
        return path


def builtin_dir() -> Path:
    return Path(os.environ.get("CLOUDRM_CACHE", Path(tempfile.gettempdir()) / "cloudrm-samples"))


#: The committed real samples (a checkout; an installed wheel has none).
ASSET_SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"


def builtin_samples() -> list[Sample]:
    """The committed real Sentinel-2 samples, or (without them) the synthetic ones."""
    manifest = ASSET_SAMPLES / "samples.json"
    if manifest.is_file():
        out = []
        for rec in json.loads(manifest.read_text()):
            folder = ASSET_SAMPLES / rec["folder"]
            out.append(Sample(rec["name"], rec["group"], tuple(str(folder / d) for d in rec["dates"]),
                              str(folder / rec["reference"]), "built-in (SEN12MS-CR, CC-BY 4.0)",
                              tuple(rec.get("notes", ()))))
        return out
    return synthetic_samples()


def synthetic_samples() -> list[Sample]:
    """Synthetic samples (written once as PNG): thin haze, thick clouds, and a three-date stack."""
    root = builtin_dir()
    specs = [("synthetic haze", "RICE1", 1, dict(p_thick=0.0, p_haze=1.0, haze_strength=(0.5, 0.7))),
             ("synthetic thick clouds", "RICE2", 1, dict(p_thick=1.0, p_haze=0.2, coverage=(0.3, 0.4))),
             ("synthetic 3 dates", "Sentinel-2", 3, dict(coverage=(0.2, 0.5)))]
    out = []
    with _lock:
        for k, (name, group, n, cfg) in enumerate(specs):
            folder = root / name.replace(" ", "_")
            files = [folder / f"cloudy_{i}.png" for i in range(n)]
            clear_f = folder / "clear.png"
            if not (clear_f.exists() and all(f.exists() for f in files)):
                folder.mkdir(parents=True, exist_ok=True)
                clear = synth.demo_scene(seed=100 + k)
                rng = np.random.default_rng(200 + k)
                dates, _ = synth.multi_temporal(clear, n, rng, synth.CloudConfig(**cfg))
                for f, d in zip(files, dates):
                    io.write_image(f, d)
                io.write_image(clear_f, clear)
            out.append(Sample(name, group, tuple(map(str, files)), str(clear_f), "built-in"))
    return out


def list_samples(per_group: int = 4) -> list[Sample]:
    """Every sample the registry finds, data root first, built-in last."""
    out: list[Sample] = []
    root = data_root()
    if root is not None:
        out += _from_root(root, "data root", per_group)
    repo = os.environ.get("CLOUDRM_SAMPLES_REPO")
    if repo:
        hub = _hub_root(repo)
        if hub is not None:
            out += _from_root(hub, f"hub:{repo}", per_group)
    return out + builtin_samples()
