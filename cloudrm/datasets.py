"""Datasets for the real layouts, the train/validation split, augmentation and training mixtures.

Layouts (``layout`` names used by ``eval --layout``):

* ``rice``     ``ROOT/cloud/ID.png`` + ``ROOT/label/ID.png`` (optional ``ROOT/mask/ID.png``), one date.
* ``sen2mtc``  ``ROOT/Sen2_MTC/<TILE>/cloud/<NAME>_{0,1,2}.tif`` + ``cloudless/<NAME>.tif``, with
               ``ROOT/{train,val,test}.txt`` tile lists; 4 bands (R,G,B,NIR) uint16 reflectance x 10000.
* ``scenes``   ``ROOT/<SCENE>/cloudy_*.{png,tif}`` + ``clear.{png,tif}``, one folder per place, 1-3 dates.

Every item is a dict: ``dates`` float32 (N,C,H,W) in display [0,1], ``target`` (C,H,W), ``name``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import cloudbank, io, synth
from .dates import MAX_DATES
from .errors import InputError

LAYOUTS = ("auto", "rice", "scenes", "sen2mtc")


def data_root() -> Path | None:
    """The data root from ``CLOUDRM_DATA`` (None when unset or missing)."""
    root = os.environ.get("CLOUDRM_DATA")
    if root and Path(root).is_dir():
        return Path(root)
    return None


# ----------------------------------------------------------------------------------------------- splits
def is_validation(name: str, fraction: float, salt: str = "cloudrm") -> bool:
    """Deterministic split by a hash of the name: stable when files are added or the order changes."""
    h = int(hashlib.sha1(f"{salt}:{name}".encode()).hexdigest()[:8], 16)
    return (h % 10_000) < fraction * 10_000


def split_names(names: Sequence[str], fraction: float = 0.15, salt: str = "cloudrm") -> tuple[list[str], list[str]]:
    """(train, validation) lists of ``names``."""
    val = [n for n in names if is_validation(n, fraction, salt)]
    vs = set(val)
    return [n for n in names if n not in vs], val


#: Validation fraction per dataset, used for every shipped weight (README, notebooks).
VAL_FRACTION = {"RICE1": 0.2, "RICE2": 0.1}

#: SEN12MS-CR regions kept for validation (patches of one region overlap in content, so the split is by
#: region): hazy/partly cloudy summer fields, full-cover autumn haze, a winter and a second summer region.
#: Patches without a region (the masked set's numeric ids) are split by name hash (20 %).
S2_VAL_REGIONS = ("ROIs1868_summer_102", "ROIs1970_fall_148", "ROIs2017_winter_102", "ROIs1868_summer_31")


def s2_is_validation(name: str) -> bool:
    """Whether a SEN12MS-CR patch (pair, masked or clear) belongs to the validation split."""
    name = name.removesuffix(".tif")
    reg = cloudbank.region(name)
    return reg in S2_VAL_REGIONS if reg != name else is_validation(name, 0.2, salt="s2")


# ----------------------------------------------------------------------------------------------- layouts
def detect_layout(root: str | os.PathLike) -> str:
    r = Path(root)
    if not r.is_dir():
        raise InputError(f"{r}: data folder not found")
    if (r / "cloud").is_dir() and (r / "label").is_dir():
        return "rice"
    if (r / "Sen2_MTC").is_dir() or any((d / "cloudless").is_dir() for d in r.iterdir() if d.is_dir()):
        return "sen2mtc"
    if any(d.is_dir() and list(d.glob("cloudy_*")) for d in r.iterdir()):
        return "scenes"
    raise InputError(f"{r}: no known layout (rice: cloud/+label/, scenes: */cloudy_*+clear, sen2mtc: Sen2_MTC/)")


def _stem_key(p: Path):
    return (0, int(p.stem)) if p.stem.isdigit() else (1, p.stem)


def rice_pairs(root: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """(name, cloudy, label) for every RICE pair present in both folders."""
    r = Path(root)
    labels = {p.stem: p for p in (r / "label").iterdir() if p.suffix.lower() in io.IMAGE_EXTS}
    out = []
    for p in sorted((r / "cloud").iterdir(), key=_stem_key):
        if p.suffix.lower() in io.IMAGE_EXTS and p.stem in labels:
            out.append((p.stem, p, labels[p.stem]))
    return out


def scene_folders(root: str | os.PathLike) -> list[tuple[str, list[Path], Path | None]]:
    """(name, cloudy dates, clear or None) for every scene folder."""
    out = []
    for d in sorted(Path(root).iterdir()):
        if not d.is_dir():
            continue
        dates = sorted(p for p in d.glob("cloudy_*") if p.suffix.lower() in io.IMAGE_EXTS)
        clear = next((p for p in sorted(d.glob("clear.*")) if p.suffix.lower() in io.IMAGE_EXTS), None)
        if dates:
            out.append((d.name, dates[:MAX_DATES], clear))
    return out


def sen2mtc_items(root: str | os.PathLike, split: str | None = None) -> list[tuple[str, list[Path], Path]]:
    """(name, 3 cloudy dates, cloudless) of the official Sen2_MTC layout, optionally one split's tiles."""
    r = Path(root)
    base = r / "Sen2_MTC" if (r / "Sen2_MTC").is_dir() else r
    tiles = sorted(d for d in base.iterdir() if d.is_dir())
    if split is not None:
        lst = r / f"{split}.txt"
        if not lst.exists():
            raise InputError(f"{lst}: tile list for split '{split}' not found")
        wanted = {t.strip() for t in lst.read_text().split() if t.strip()}
        tiles = [t for t in tiles if t.name in wanted]
    out = []
    for t in tiles:
        for clear in sorted((t / "cloudless").glob("*.tif")):
            dates = [t / "cloud" / f"{clear.stem}_{i}.tif" for i in range(3)]
            if all(d.exists() for d in dates):
                out.append((f"{t.name}/{clear.stem}", dates, clear))
    return out


def _display(path: Path, bands=None, rgb: bool = True) -> np.ndarray:
    r = io.read_image(path, bands)
    if rgb:
        r = io.to_rgb(r)
    return io.to_display(r)


def iter_eval_items(root: str | os.PathLike, layout: str = "auto", limit: int | None = None,
                    names: Sequence[str] | None = None) -> Iterator[dict]:
    """Evaluation items of a data folder (all of it, or only ``names``), RGB display [0,1]."""
    layout = detect_layout(root) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout '{layout}' (use {', '.join(LAYOUTS)})")
    if layout == "rice":
        entries = [(n, [c], l) for n, c, l in rice_pairs(root)]
    elif layout == "scenes":
        entries = scene_folders(root)
    else:
        entries = sen2mtc_items(root, "test" if (Path(root) / "test.txt").exists() else None)
    if names is not None:
        keep = set(names)
        entries = [e for e in entries if e[0] in keep]
    for i, (name, dates, clear) in enumerate(entries):
        if limit is not None and i >= limit:
            break
        item = {"name": name, "dates": np.stack([_display(d) for d in dates]), "paths": [str(d) for d in dates]}
        item["target"] = _display(clear) if clear is not None else None
        yield item


# ----------------------------------------------------------------------------------------------- augmentation
def augment(arrays: Sequence[np.ndarray], rng: np.random.Generator, crop: int | None) -> list[np.ndarray]:
    """The same random crop, flips and rot90 for every array (all (..., H, W))."""
    h, w = arrays[0].shape[-2:]
    if crop is not None and (h > crop or w > crop):
        y = int(rng.integers(0, h - crop + 1)) if h > crop else 0
        x = int(rng.integers(0, w - crop + 1)) if w > crop else 0
        arrays = [a[..., y:y + crop, x:x + crop] for a in arrays]
    k = int(rng.integers(0, 4))
    flip = rng.random() < 0.5
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(a))
    return out


def resize_to(img: np.ndarray, size: int) -> np.ndarray:
    """Upsample a (C,H,W) image so its shorter side is at least ``size`` (bicubic)."""
    c, h, w = img.shape
    if min(h, w) >= size:
        return img
    s = size / min(h, w)
    t = torch.from_numpy(img)[None]
    t = torch.nn.functional.interpolate(t, size=(round(h * s), round(w * s)), mode="bicubic", align_corners=False)
    return t[0].clamp(0, 1).numpy()


# ----------------------------------------------------------------------------------------------- training mixtures
def _load_u8(path: Path) -> np.ndarray:
    return np.round(_display(path) * 255).astype(np.uint8)


@dataclass
class Source:
    """Where training images come from (paths relative to the data root)."""

    rice: Sequence[str] = ()          # e.g. ("RICE2",): real pairs, train split only
    clear: Sequence[str] = ()         # e.g. ("AID", "RICE2/label"): clear images for synthetic clouds
    sen2mtc: str | None = None        # an official Sen2_MTC root (train split)
    scenes: Sequence[str] = ()        # e.g. ("SEN12MS-CR/pairs",): real one-date pairs in the scenes layout
    s2_clear: Sequence[str] = ()      # clear Sentinel-2 GeoTIFFs: folders of files, or scene folders' clear.*
    bank: Sequence[str] = ()          # scene folders whose pairs give real cloud layers (cloudbank)


class TrainMixture(Dataset):
    """Real pairs and synthetic clouds, one sample per index, deterministic given (seed, epoch, index).

    Returns ``dates`` (MAX_DATES, C, crop, crop), ``n_dates`` (1..3; dates past it are zeros), ``target``,
    ``mask`` (H, W) in [0,1] (the cloud map Pixel-CR's attention learns).
    """

    def __init__(self, root: str | os.PathLike, source: Source, crop: int = 128, p_real: float = 0.5,
                 dates: tuple[int, int] = (1, 1), length: int = 10_000, seed: int = 0,
                 cloud_cfg: synth.CloudConfig = synth.CloudConfig(), p_bank: float = 0.5, p_s2: float = 0.5,
                 bank: "cloudbank.CloudBank | None" = None):
        self.root, self.crop, self.p_real, self.dates, self.length, self.seed = Path(root), crop, p_real, dates, length, seed
        self.cloud_cfg, self.p_bank, self.p_s2 = cloud_cfg, p_bank, p_s2
        self.epoch = 0
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for name in source.rice:
            ds_root = self.root / name
            if not ds_root.is_dir():
                continue
            pairs = rice_pairs(ds_root)
            train, _ = split_names([n for n, _, _ in pairs], VAL_FRACTION.get(name, 0.15))
            keep = set(train)
            self.pairs += [(_load_u8(c), _load_u8(l)) for n, c, l in pairs if n in keep]
        self.clear: list[np.ndarray] = []
        for spec in source.clear:
            self.clear += self._load_clear(spec)
        self.stacks: list[tuple[np.ndarray, np.ndarray]] = []
        if source.sen2mtc:
            for _, ds, cl in sen2mtc_items(source.sen2mtc, "train"):
                self.stacks.append((np.stack([_load_u8(d) for d in ds]), _load_u8(cl)))
        # Sentinel-2: real pairs (train regions), clear backgrounds in linear units, real cloud layers
        self.s2_clear: list[np.ndarray] = []
        for spec in source.scenes:
            for name, dates_, clear in scene_folders(self.root / spec) if (self.root / spec).is_dir() else []:
                if clear is not None and not s2_is_validation(name):
                    self.pairs.append((_load_u8(dates_[0]), _load_u8(clear)))
        # a pair whose clear date is whiter than its cloudy one (snow) teaches no cloud removal (cloudbank)
        self.pairs = [(c, l) for c, l in self.pairs if cloudbank.teaches_removal(c.astype(np.float32) / 255,
                                                                                 l.astype(np.float32) / 255)]
        for spec in source.s2_clear:
            self.s2_clear += self._load_s2_clear(self.root / spec)
        self.bank = bank if bank is not None else train_bank(self.root, source.bank)
        if not (self.pairs or self.clear or self.stacks or self.s2_clear):
            raise InputError(f"{root}: no training images found for {source}")

    def _load_clear(self, spec: str) -> list[np.ndarray]:
        """Clear images: a RICE ``label`` folder (train split only) or a folder tree of images (AID)."""
        path = self.root / spec
        if not path.is_dir():
            return []
        if path.name == "label" and (path.parent / "cloud").is_dir():
            pairs = rice_pairs(path.parent)
            train, _ = split_names([n for n, _, _ in pairs], VAL_FRACTION.get(path.parent.name, 0.15))
            keep = set(train)
            return [_load_u8(l) for n, _, l in pairs if n in keep]
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in io.IMAGE_EXTS)
        return [_load_u8(p) for p in files]

    @staticmethod
    def _load_s2_clear(path: Path) -> list[np.ndarray]:
        """Linear RGB (reflectance x gain, float16) of the train split's clear Sentinel-2 patches under ``path``."""
        if not path.is_dir():
            return []
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in io._TIFF_EXTS
                       and (p.parent == path or p.stem == "clear"))
        keep = [p for p in files if not s2_is_validation(p.stem if p.parent == path else p.parent.name)]
        return [cloudbank.linear(io.read_image(p)).astype(np.float16) for p in keep]

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        n = int(rng.integers(self.dates[0], self.dates[1] + 1))
        use_real = (self.pairs or self.stacks) and (not self.clear or rng.random() < self.p_real)
        if use_real:
            if self.stacks and (not self.pairs or rng.random() < 0.5):
                ds, target = self.stacks[int(rng.integers(len(self.stacks)))]
                dates = ds[:n].astype(np.float32) / 255
                target = target.astype(np.float32) / 255
            else:
                cloudy, target = self.pairs[int(rng.integers(len(self.pairs)))]
                dates = cloudy[None].astype(np.float32) / 255
                target = target.astype(np.float32) / 255
                n = 1
            mask = real_cloud_mask(dates[0], target)
        else:
            s2 = bool(self.s2_clear) and (not self.clear or rng.random() < self.p_s2)
            pool = self.s2_clear if s2 else self.clear
            bg = pool[int(rng.integers(len(pool)))].astype(np.float32)
            bg = resize_to(bg if s2 else bg / 255, self.crop) if not s2 else bg
            y, x = (int(rng.integers(0, s - self.crop + 1)) for s in bg.shape[1:])
            bg = bg[:, y:y + self.crop, x:x + self.crop]
            # reflectance backgrounds are composited in linear units, then toned like a GeoTIFF read;
            # pictures are their own linear units and clip (saturated white cloud cores, as in RICE)
            to_disp = io.tone if s2 else (lambda a: np.clip(a, 0.0, 1.0))
            dates, masks = synth.multi_temporal(bg, n, rng, self.cloud_cfg, bank=self.bank, p_bank=self.p_bank,
                                                to_display=to_disp)
            target = to_disp(bg)
            mask = masks[0]
        dates, target, mask = augment([dates, target, mask], rng, self.crop)
        full = np.zeros((MAX_DATES,) + dates.shape[1:], np.float32)
        full[:n] = dates[:n]
        return {"dates": torch.from_numpy(full), "n_dates": n, "target": torch.from_numpy(target.astype(np.float32)),
                "mask": torch.from_numpy(mask.astype(np.float32))}


def train_bank(root: str | os.PathLike, folders: Sequence[str]) -> "cloudbank.CloudBank | None":
    """The real cloud layers of the training regions of the SEN12MS-CR ``folders`` under ``root`` (None: no folders)."""
    if not folders:
        return None
    return cloudbank.CloudBank.from_folders([Path(root) / f for f in folders], keep=lambda n: not s2_is_validation(n))


def real_cloud_mask(cloudy: np.ndarray, label: np.ndarray, threshold: float = 0.04) -> np.ndarray:
    """Binarised cloud map M of a real pair: where cloudy and clear differ (channel-mean |difference|).

    The paper binarises the label/cloudy disparity; the official code's clip(sum(label - cloudy), 0, 1) is
    zero under bright clouds (label - cloudy < 0 there), so the absolute difference is used instead.
    """
    return (np.abs(cloudy - label).mean(axis=0) > threshold).astype(np.float32)


def made_dates(item: dict, bank: "cloudbank.CloudBank", n: int, seed: int = 0, p_bank: float = 1.0) -> np.ndarray:
    """(n,C,H,W) display dates made from the clear target of a real pair ``item`` (linear units recovered
    with :func:`io.untone`): real cloud layers of ``bank`` (else procedural clouds, 1 - ``p_bank`` of the
    dates) and, with several dates, date-to-date ground change. With ``n`` = 1 there is no ground change, so
    the target is the made date's exact reference: its cloud-free pixels are the target's."""
    rng = np.random.default_rng(seed)
    clear_lin = io.untone(item["target"]).astype(np.float32)
    made, _ = synth.multi_temporal(clear_lin, n, rng, synth.CloudConfig(), bank=bank, p_bank=p_bank,
                                   to_display=io.tone)
    return made.astype(np.float32)


def s2_stack(item: dict, bank: "cloudbank.CloudBank", seed: int = 0) -> np.ndarray:
    """(3,C,H,W) display dates for a real pair ``item``: its real cloudy date, then two dates made from its
    clear target with real cloud layers (:func:`made_dates`). Used for validation stacks and the built-in
    3-date samples."""
    return np.concatenate([item["dates"][:1], made_dates(item, bank, 2, seed)]).astype(np.float32)


def validation_pairs(root: str | os.PathLike, name: str) -> list[dict]:
    """The validation split of a RICE dataset (``name`` = folder under the root) as eval items."""
    ds_root = Path(root) / name
    pairs = rice_pairs(ds_root)
    _, val = split_names([n for n, _, _ in pairs], VAL_FRACTION.get(name, 0.15))
    return list(iter_eval_items(ds_root, "rice", names=val))
