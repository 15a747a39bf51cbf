"""The one image I/O layer: PNG / JPEG / TIFF / GeoTIFF <-> :class:`Raster`.

Value conventions (everything else in the project relies on them):

* ``Raster.data`` is float32 ``(C, H, W)`` in *physical* units: 8-bit files / 255, 16-bit PNG / 65535,
  integer TIFF / 10000 (Sentinel-2 L1C/L2A store ``DN = 10000 * reflectance``), float files as stored.
* Models see *display* values in [0, 1]. Ordinary pictures (``gain`` 1): ``clip(data, 0, 1)``. Reflectance
  (``gain`` = :data:`REFLECTANCE_GAIN`): a fixed, scene-wide true-colour stretch ``tone(data * gain)`` that is
  linear up to 0.25 reflectance (display 0.75, where almost all cloud-free ground lies) and then rolls off
  logarithmically to white at 1.2, so bright ground (sand, snow, roofs) keeps its texture instead of clipping at
  0.33. Tiles of one scene share it and :func:`encode` inverts it exactly (a cloud-free pixel keeps its
  reflectance through a write).
* Pixels that are nodata, NaN or inf are ``False`` in ``Raster.valid`` and 0 in ``data``: never NaN downstream.

Writes go to a temporary name in the target folder and are renamed at the end, so a failure never leaves a
partial file behind.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError, InputError, one_line

#: Sentinel-2 band order of Sen2_MTC files and the 4-band default: R, G, B, NIR = B4, B3, B2, B8.
SENTINEL2_RGBN = ("B04", "B03", "B02", "B08")
#: Display gain applied to reflectance (a common Sentinel-2 true-colour stretch) below the roll-off knee.
REFLECTANCE_GAIN = 3.0
#: The tone curve: identity up to TONE_KNEE (display), then log roll-off reaching 1.0 at TONE_WHITE
#: (= 1.2 reflectance x gain). TONE_A makes the slope continuous (1) at the knee.
TONE_KNEE, TONE_WHITE = 0.75, 3.6
#: Largest image accepted, in pixels (larger files are refused as possible decompression bombs).
MAX_PIXELS = 30_000 * 30_000
#: Smallest side a method accepts.
MIN_SIDE = 16

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_TIFF_EXTS = (".tif", ".tiff")
_BAND_ALIASES = {
    "B04": ("b4", "b04", "red", "r"), "B03": ("b3", "b03", "green", "g"),
    "B02": ("b2", "b02", "blue", "b"), "B08": ("b8", "b08", "nir", "nir1"),
}


@dataclass
class Raster:
    """An image read from disk. ``data`` (C,H,W) float32 in physical units (see module doc)."""

    data: np.ndarray
    valid: np.ndarray                      # (H, W) bool
    bands: tuple[str, ...]                 # names of the channels in ``data``
    scale: float = 255.0                   # file value = data * scale
    gain: float = 1.0                      # display = clip(data * gain, 0, 1)
    dtype: str = "uint8"                   # dtype of the file
    profile: dict[str, Any] | None = None  # rasterio profile (crs, transform, nodata) of a GeoTIFF
    path: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape[1], self.data.shape[2]

    @property
    def is_geo(self) -> bool:
        return bool(self.profile and self.profile.get("crs") is not None)


def _tone_a() -> float:
    """Solve (1 - K) a / log1p(a (W - K)) = 1 for a (bisection: the left side grows with a)."""
    lo, hi = 1e-3, 1e3
    for _ in range(100):
        a = (lo + hi) / 2
        lo, hi = (a, hi) if (1 - TONE_KNEE) * a / np.log1p(a * (TONE_WHITE - TONE_KNEE)) < 1 else (lo, a)
    return (lo + hi) / 2


TONE_A = _tone_a()
_TONE_LOG = float(np.log1p(TONE_A * (TONE_WHITE - TONE_KNEE)))


def tone(x: np.ndarray) -> np.ndarray:
    """Linear display values (reflectance x gain, any range) -> display [0, 1]: identity up to the knee."""
    x = np.asarray(x, dtype=np.float32)
    over = np.maximum(x - TONE_KNEE, 0.0)
    rolled = TONE_KNEE + (1 - TONE_KNEE) * np.log1p(TONE_A * over) / _TONE_LOG
    return np.clip(np.where(x > TONE_KNEE, rolled, x), 0.0, 1.0).astype(np.float32)


def untone(d: np.ndarray) -> np.ndarray:
    """Inverse of :func:`tone` on [0, 1] (1.0 maps back to the white point)."""
    d = np.clip(np.asarray(d, dtype=np.float64), 0.0, 1.0)
    back = TONE_KNEE + np.expm1((d - TONE_KNEE) / (1 - TONE_KNEE) * _TONE_LOG) / TONE_A
    return np.where(d > TONE_KNEE, back, d)


def to_display(raster: Raster) -> np.ndarray:
    """Model-ready float32 (C,H,W) in [0,1]; invalid pixels are 0."""
    lin = raster.data * raster.gain
    out = (tone(lin) if raster.gain != 1.0 else np.clip(lin, 0.0, 1.0)).astype(np.float32)
    out[:, ~raster.valid] = 0.0
    return out


def stretch(image: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Percentile display stretch of (C,H,W) or (H,W) data to [0,1], for looking at raw reflectance."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros_like(image, dtype=np.float32)
    lo, hi = np.percentile(finite, [low, high])
    return np.clip((np.nan_to_num(image) - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------- reading
def check_file(path: str | os.PathLike) -> Path:
    """The path, if it names a non-empty file; else a one-line InputError."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not an image")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: empty file")
    return p


def read_image(path: str | os.PathLike, bands: Sequence[int | str] | str | None = None,
               min_side: int = MIN_SIDE) -> Raster:
    """Read an image file into a :class:`Raster`; raises :class:`InputError` with one line on any problem.

    ``bands``: 1-based indexes or names (``"B04,B03,B02"``, ``[4, 3, 2]``). Default: files with 1-4 bands
    are read as gray / RGB / RGB+NIR; files with more bands need ``bands`` unless their band descriptions
    name R, G and B. Images with a side under ``min_side`` px are refused (methods need at least 16).
    """
    p = check_file(path)
    ext = p.suffix.lower()
    if ext not in IMAGE_EXTS:
        raise InputError(f"{p}: unsupported file type '{ext}' (use {', '.join(IMAGE_EXTS)})")
    try:
        raster = _read_tiff(p, bands) if is_tiff(p) else _read_pil(p, bands)
    except InputError:
        raise
    except Exception as exc:  # any decoder failure becomes one line
        raise InputError(f"{p}: not a readable image ({_why(exc)})") from None
    h, w = raster.shape
    if min(h, w) < min_side:
        raise InputError(f"{p}: image is {w}x{h}; each side must be at least {min_side} px")
    if not raster.valid.any():
        raise InputError(f"{p}: every pixel is nodata/NaN; nothing to process")
    return raster


def _parse_bands(bands: Sequence[int | str] | str | None) -> list[int | str] | None:
    if bands is None:
        return None
    items = bands.split(",") if isinstance(bands, str) else list(bands)
    out: list[int | str] = []
    for b in items:
        b = b.strip() if isinstance(b, str) else b
        if isinstance(b, str) and b.isdigit():
            b = int(b)
        if isinstance(b, int) and b < 1:
            raise InputError(f"band index {b}: bands are 1-based")
        out.append(b)
    if not out:
        raise InputError("--bands is empty")
    return out


def _resolve_bands(count: int, descriptions: Sequence[str | None], bands, path: Path) -> tuple[list[int], list[str]]:
    """0-based band indexes to read, and their names."""
    desc = [(d or "").strip() for d in descriptions]
    wanted = _parse_bands(bands)
    if wanted is None:
        if count in (1, 2):
            return [0], ["gray"]
        if count in (3, 4):
            return list(range(count)), list(SENTINEL2_RGBN[:count])
        # more bands: only if the descriptions name R, G, B
        found = []
        for name in SENTINEL2_RGBN[:3]:
            idx = _find_band(name, desc)
            if idx is None:
                raise InputError(
                    f"{path.name}: {count} bands and no band descriptions naming R,G,B; "
                    f"choose them with --bands (e.g. --bands 4,3,2 for Sentinel-2)")
            found.append(idx)
        return found, list(SENTINEL2_RGBN[:3])
    idxs, names = [], []
    for b in wanted:
        if isinstance(b, int):
            if b > count:
                raise InputError(f"{path.name}: band {b} requested but the file has {count} band(s)")
            idxs.append(b - 1)
            names.append(desc[b - 1] or f"band{b}")
        else:
            idx = _find_band(b, desc)
            if idx is None:
                raise InputError(f"{path.name}: no band named '{b}' (descriptions: {desc})")
            idxs.append(idx)
            names.append(b.upper())
    return idxs, names


def _find_band(name: str, desc: Sequence[str]) -> int | None:
    key = name.upper()
    aliases = set(_BAND_ALIASES.get(key, ())) | {name.lower()}
    for k, al in _BAND_ALIASES.items():
        if name.lower() in al:
            aliases |= set(al) | {k.lower()}
    for i, d in enumerate(desc):
        if d.lower() in aliases:
            return i
    return None


def _read_pil(p: Path, bands) -> Raster:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            # Only the decoders for what the extensions promise: an EPS or other file named .png must never reach
            # another Pillow plugin (EPS would run Ghostscript where it is installed). TIFFs go to rasterio.
            img = Image.open(p, formats=("PNG", "JPEG"))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise InputError(f"{p}: {w}x{h} is larger than the limit of {MAX_PIXELS} pixels")
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(f"{p}: image too large (possible decompression bomb; limit {MAX_PIXELS} px)") from None
    notes = []
    if getattr(img, "n_frames", 1) > 1:
        notes.append(f"{p.name} has {img.n_frames} frames (an animated image): only the first frame is used")
    mode = img.mode
    finite = None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)[None] / 65535.0
        scale, dtype, names = 65535.0, "uint16", ["gray"]
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float32)[None]
        scale, dtype, names = 1.0, "float32", ["gray"]
        finite = np.isfinite(arr[0])  # NaN/inf are masked, never propagated
        arr = np.where(finite, arr, 0.0).astype(np.float32)
    else:
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
            notes.append("alpha channel ignored")
        if mode in ("L", "LA", "1"):
            img = img.convert("L")
            arr = np.asarray(img, dtype=np.float32)[None] / 255.0
            names = ["gray"]
        else:
            img = img.convert("RGB")
            arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
            names = list(SENTINEL2_RGBN[:3])
        scale, dtype = 255.0, "uint8"
    if bands is not None:
        idxs, names = _resolve_bands(arr.shape[0], [None] * arr.shape[0], bands, p)
        arr = arr[idxs]
    valid = np.ones(arr.shape[1:], dtype=bool)
    if finite is not None:
        valid &= finite
    return Raster(np.ascontiguousarray(arr), valid, tuple(names), scale, 1.0, dtype, None, str(p), notes)


def _tiff_scale(dtype: str) -> tuple[float, float]:
    """(scale, gain) for a TIFF of this dtype: uint8 pictures, integer reflectance x10000, float as stored."""
    if dtype == "uint8":
        return 255.0, 1.0
    if dtype.startswith(("uint", "int")):
        return 10000.0, REFLECTANCE_GAIN
    return 1.0, REFLECTANCE_GAIN


def probe_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from the file header, without decoding pixels; None when unknown (``read_image`` says
    why when it reads the file)."""
    try:
        if is_tiff(path):
            info = tiff_info(path)
            return int(info["width"]), int(info["height"])
        from PIL import Image

        with Image.open(path) as img:
            return img.size
    except Exception:
        return None


def tiff_info(path: str | os.PathLike) -> dict[str, Any]:
    """Size, band count, dtype, CRS, transform and nodata of a TIFF, without reading its pixels."""
    import rasterio

    with rasterio.open(path) as src:
        return {"width": src.width, "height": src.height, "count": src.count, "dtype": src.dtypes[0],
                "crs": src.crs, "transform": src.transform, "nodata": src.nodata,
                "descriptions": src.descriptions, "profile": dict(src.profile)}


def _read_tiff(p: Path, bands, window=None, src=None) -> Raster:
    import rasterio
    from rasterio.errors import RasterioIOError

    if src is None:
        try:
            src = rasterio.open(p)
        except RasterioIOError as exc:
            raise InputError(f"{p}: not a readable TIFF ({str(exc).splitlines()[0]})") from None
        with src:
            return _read_tiff(p, bands, window, src)
    if src.width * src.height > MAX_PIXELS:
        raise InputError(f"{p}: {src.width}x{src.height} is larger than the limit of {MAX_PIXELS} pixels")
    if src.dtypes[0].startswith("complex"):
        raise InputError(f"{p}: complex-valued pixels ({src.dtypes[0]}) are not an image; give real-valued bands")
    idxs, names = _resolve_bands(src.count, src.descriptions, bands, p)
    raw = src.read([i + 1 for i in idxs], window=window, masked=False)
    dtype = src.dtypes[0]
    nodata = src.nodata
    profile = dict(src.profile)
    profile["band_names"] = names
    valid = np.ones(raw.shape[1:], dtype=bool)
    with np.errstate(over="ignore"):  # float64 beyond float32's range: reported as an overflow below
        data = raw.astype(np.float32)
    if nodata is not None and not np.isnan(nodata):
        valid &= ~np.any(raw == nodata, axis=0)
    finite = np.isfinite(data)
    if raw.dtype.kind == "f" and not finite.all() and (np.isfinite(raw) & ~finite).any():
        big = float(np.abs(raw[np.isfinite(raw)]).max())
        raise InputError(f"{p}: values overflow (up to {big:.3g}, beyond float32's 3.4e38); rescale the data")
    valid &= finite.all(axis=0)
    data = np.where(finite, data, 0.0)
    scale, gain = _tiff_scale(dtype)
    data /= scale
    data[:, ~valid] = 0.0
    notes = ["single band shown as gray"] if names == ["gray"] else []
    pages = [d for d in src.subdatasets if d.startswith("GTIFF_DIR:")] if window is None else []
    if len(pages) > 1:
        notes.append(f"{p.name} has {len(pages)} pages (a multi-page TIFF): only the first page is used")
    return Raster(data.astype(np.float32), valid, tuple(names), scale, gain, dtype, profile, str(p), notes)


def read_window(path: str | os.PathLike, window, bands=None, src=None) -> Raster:
    """Read one rasterio ``Window`` of a TIFF (for tiled whole-scene processing).

    ``src``: an already open rasterio dataset of ``path`` (keeps GDAL's block cache across windows).
    Any decoder failure becomes one-line :class:`InputError`.
    """
    p = Path(path)
    try:
        return _read_tiff(p, bands, window=window, src=src)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{p}: not a readable image ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    """One line saying why a decoder failed (GDAL's real reason, not rasterio's 'See previous exception')."""
    cause = exc.__cause__ or exc.__context__
    if "previous exception" in str(exc) and cause is not None and str(cause):
        exc = cause
    return one_line(exc)


def band_colour(rgb: Sequence[float] | np.ndarray, c: int) -> np.ndarray:
    """(c,) float32 values of an RGB colour for ``c`` channels: extra bands (NIR) take the red value (a
    colour fitted on RGB, e.g. a shadow's, is carried into NIR by its closest band)."""
    v = np.asarray(rgb, np.float32)
    return np.concatenate([v, np.full(max(c - len(v), 0), v[0], np.float32)])[:c]


def to_rgb(raster: Raster) -> Raster:
    """The same raster with exactly 3 channels: gray is repeated, extra bands (NIR) dropped."""
    c = raster.data.shape[0]
    if c == 3:
        return raster
    if c == 1:
        return replace(raster, data=np.repeat(raster.data, 3, axis=0), bands=("gray",) * 3)
    if c > 3:
        return replace(raster, data=raster.data[:3], bands=raster.bands[:3])
    raise InputError(f"{raster.path}: {c} channels cannot be shown as RGB")


# ----------------------------------------------------------------------------------------------- writing
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _atomic_target(path: Path) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise ConfigError(f"{path}: output folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{path}: output folder '{parent}' is not writable")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the renamed output gets ordinary permissions
    return Path(tmp)


def check_output_path(path: str | os.PathLike) -> Path:
    """Validate an output path before any work is done (extension, folder exists and is writable)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; name an output file (.png, .tif or .tiff)")
    if p.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise ConfigError(f"{p}: unsupported output type '{p.suffix}' (use .png, .tif or .tiff)")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"{p}: output folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{p}: output folder '{parent}' is not writable")
    return p


def quantize(image: np.ndarray) -> np.ndarray:
    """(C,H,W) float [0,1] -> (H,W,C) uint8, the values every PNG output and every metric uses."""
    return np.round(np.clip(np.nan_to_num(image), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def write_image(path: str | os.PathLike, image: np.ndarray, like: Raster | None = None,
                valid: np.ndarray | None = None, tags: dict[str, str] | None = None) -> Path:
    """Write a display-space (C,H,W) [0,1] image.

    ``.png``: 8-bit (gray or RGB). ``.tif``: when ``like`` is a GeoTIFF, its CRS, transform, nodata and dtype
    scale are kept (reflectance is restored by inverting the display gain); otherwise an 8-bit TIFF.
    """
    p = check_output_path(path)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    tmp = _atomic_target(p)
    try:
        if p.suffix.lower() == ".png":
            from PIL import Image

            q = quantize(image)
            Image.fromarray(q[..., 0] if q.shape[-1] == 1 else q).save(tmp, format="PNG")
        else:
            _write_tiff(tmp, image, like, valid, tags)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def geotiff_profile(like: Raster | None, count: int, height: int, width: int) -> dict[str, Any]:
    """A tiled, compressed GeoTIFF profile that keeps ``like``'s georeferencing, nodata and dtype."""
    profile: dict[str, Any] = {"driver": "GTiff", "count": count, "height": height, "width": width,
                               "dtype": "uint8", "compress": "deflate"}
    if height >= 256 and width >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if like is not None and like.profile is not None:
        for k in ("crs", "transform", "nodata"):
            if like.profile.get(k) is not None:
                profile[k] = like.profile[k]
        profile["dtype"] = like.dtype
    return profile


def encode(image: np.ndarray, like: Raster | None, dtype: str, nodata=None, valid=None) -> np.ndarray:
    """Display [0,1] -> file values of ``dtype`` (inverse of reading ``like``). With ``valid``: invalid
    pixels become ``nodata`` (NaN for float files without one); valid pixels never equal ``nodata``."""
    scale, gain = (like.scale, like.gain) if like is not None else (255.0, 1.0)
    vals = (untone(image) if gain != 1.0 else image) / gain * scale
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        vals = np.clip(np.round(vals), info.min, info.max)
    vals = vals.astype(dtype)
    if valid is not None:
        if nodata is not None and not np.isnan(nodata):
            if np.issubdtype(np.dtype(dtype), np.integer):  # a valid pixel must not read back as nodata
                hit = (vals == nodata) & valid[None]
                if hit.any():
                    vals[hit] = nodata + 1 if nodata < np.iinfo(dtype).max else nodata - 1
            vals[:, ~valid] = nodata
        elif np.issubdtype(np.dtype(dtype), np.floating):  # float file without a nodata tag: NaN stays NaN
            vals[:, ~valid] = np.nan
    return vals


def band_tags(like: Raster, n_out: int) -> dict[str, str]:
    """GeoTIFF metadata of a model output: which input bands it holds (the models are RGB: NIR is dropped)."""
    kept, dropped = like.bands[:n_out], like.bands[n_out:]
    tags = {"CLOUDRM_BANDS_MODELLED": ",".join(kept)}
    if dropped:
        tags["CLOUDRM_BANDS_DROPPED"] = ",".join(dropped)
        tags["CLOUDRM_NOTE"] = (f"the cloud-removal models work on {n_out} bands; input band(s) "
                                f"{', '.join(dropped)} are not in this output")
    return tags


def _write_tiff(tmp: Path, image: np.ndarray, like: Raster | None, valid, tags: dict[str, str] | None = None) -> None:
    import rasterio

    c, h, w = image.shape
    profile = geotiff_profile(like, c, h, w)
    if like is not None and like.profile is None:  # an ordinary picture: 8-bit TIFF
        profile["dtype"] = "uint8"
    if valid is None and like is not None and like.valid.shape == (h, w):
        valid = like.valid
    vals = encode(image, like if like is not None and like.profile is not None else None,
                  profile["dtype"], profile.get("nodata"), valid)
    names = list(like.bands[:c]) if like is not None and len(like.bands) >= c else [f"band{i+1}" for i in range(c)]
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(vals)
        for i, n in enumerate(names, 1):
            dst.set_band_description(i, n)
        if tags:
            dst.update_tags(**tags)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(C,H,W) -> (3,H,W): gray repeated, extra bands (NIR) dropped."""
    if image.shape[0] == 1:
        return np.repeat(image, 3, axis=0)
    if image.shape[0] == 2:
        return np.repeat(image[:1], 3, axis=0)
    return image[:3]


def read_reference(ref_path: str | None, like: Raster, bands=None) -> np.ndarray | None:
    """The reference in display values (3,H,W), checked against the dates' size."""
    if ref_path is None:
        return None
    is_tiff = Path(ref_path).suffix.lower() in (".tif", ".tiff")
    ref = read_image(ref_path, bands if is_tiff else None)
    if ref.shape != like.shape:
        raise InputError(f"reference {Path(ref_path).name} is {ref.shape[1]}x{ref.shape[0]} but the dates are "
                         f"{like.shape[1]}x{like.shape[0]}; the reference must show the same place at the same size")
    return as_rgb(to_display(ref))


# ----------------------------------------------------------------------------------------------- TIFF test
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF and BigTIFF, little and big endian


def is_tiff(path: str | os.PathLike) -> bool:
    """True if ``path`` is an existing file that starts with a TIFF/BigTIFF header (the one TIFF test)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in TIFF_MAGIC
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------- maps, rows
def write_map(path: str | os.PathLike, m: np.ndarray, like: Raster | None = None, valid=None) -> Path:
    """A (H,W) map: GeoTIFF float32 (raw values, georeferenced like ``like``) or PNG (min(1, 4 x value))."""
    p = Path(path)
    if p.suffix.lower() == ".png":
        return write_image(p, np.clip(m * 4, 0, 1)[None])
    geo = replace(like, dtype="float32", scale=1.0, gain=1.0, bands=("uncertainty",)) if like is not None and like.is_geo else None
    if geo is not None and geo.profile is not None:
        geo.profile = dict(geo.profile, nodata=None)
    return write_image(p, m[None].astype(np.float32), like=geo, valid=valid)


class RowWriter:
    """Rows of one output file, written top to bottom (whole scenes); a temporary file until :meth:`commit`,
    removed by :meth:`abort`, so a failure leaves nothing behind."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = _atomic_target(path)

    def write(self, y: int, image: np.ndarray, valid: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def commit(self) -> None:
        self.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class TiffRowWriter(RowWriter):
    """Windowed writes into a tiled, deflate-compressed GeoTIFF; rows are buffered to whole block rows so no
    compressed block is written twice."""

    def __init__(self, path: Path, profile: dict, names: Sequence[str], encode_rows,
                 tags: dict[str, str] | None = None):
        super().__init__(path)
        import rasterio

        self.encode = encode_rows
        self.dst = rasterio.open(self.tmp, "w", **profile)
        for i, n in enumerate(names, 1):
            self.dst.set_band_description(i, n)
        if tags:
            self.dst.update_tags(**tags)
        self.block = self.dst.block_shapes[0][0]
        self.height = profile["height"]
        self.pending: list[np.ndarray] = []
        self.y0 = 0  # first row not yet written to the file
        self.rows = 0

    def write(self, y: int, image: np.ndarray, valid: np.ndarray) -> None:
        from rasterio.windows import Window

        assert y == self.y0 + self.rows, "rows must arrive in order"
        self.pending.append(self.encode(image, valid))
        self.rows += image.shape[1]
        n = self.rows if self.y0 + self.rows >= self.height else (self.rows // self.block) * self.block
        if n == 0:
            return
        buf = np.concatenate(self.pending, axis=1) if len(self.pending) > 1 else self.pending[0]
        self.dst.write(buf[:, :n], window=Window(0, self.y0, buf.shape[2], n))
        rest = buf[:, n:]
        self.pending = [rest] if rest.shape[1] else []
        self.y0 += n
        self.rows -= n

    def close(self) -> None:
        if self.dst is not None and not self.dst.closed:
            self.dst.close()


class PngRowWriter(RowWriter):
    """An 8-bit PNG: held as uint8 (never float) and saved at commit."""

    def __init__(self, path: Path, height: int, width: int, channels: int, to_uint8):
        super().__init__(path)
        self.arr = np.zeros((height, width, channels), np.uint8)
        self.to_uint8 = to_uint8

    def write(self, y: int, image: np.ndarray, valid: np.ndarray) -> None:
        self.arr[y:y + image.shape[1]] = self.to_uint8(image)

    def commit(self) -> None:
        from PIL import Image

        a = self.arr[..., 0] if self.arr.shape[-1] == 1 else self.arr
        Image.fromarray(a).save(self.tmp, format="PNG")
        super().commit()


def image_row_writer(path: Path, like: Raster, c: int, h: int, w: int) -> RowWriter:
    """Rows of a ``c``-band display image -> ``path`` as :func:`write_image` would write it whole: PNG, or a
    GeoTIFF in ``like``'s dtype scale (invalid pixels -> nodata, see :func:`encode`)."""
    if path.suffix.lower() == ".png":
        return PngRowWriter(path, h, w, c, quantize)
    profile = geotiff_profile(like, c, h, w)
    profile["BIGTIFF"] = "IF_SAFER"
    if like.profile is None:
        profile["dtype"] = "uint8"
    names = list(like.bands[:c]) if len(like.bands) >= c else [f"band{i + 1}" for i in range(c)]
    dtype, nodata = profile["dtype"], profile.get("nodata")
    return TiffRowWriter(path, profile, names, lambda image, valid: encode(image, like, dtype, nodata, valid),
                         tags=band_tags(like, c))


def map_row_writer(path: Path, like: Raster, h: int, w: int) -> RowWriter:
    """Rows of a (1,H,W) map, as :func:`write_map` writes it: raw float32 GeoTIFF or PNG min(1, 4 x value)."""
    if path.suffix.lower() == ".png":
        return PngRowWriter(path, h, w, 1, lambda m: quantize(np.clip(m * 4, 0, 1)))
    profile = geotiff_profile(like, 1, h, w)
    profile.update(dtype="float32", BIGTIFF="IF_SAFER")
    profile.pop("nodata", None)
    return TiffRowWriter(path, profile, ["uncertainty"], lambda m, v: np.where(v[None], m, np.nan).astype(np.float32))
