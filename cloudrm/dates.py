"""The dates of one scene: how many, whether they lie on one grid with the same bands, the model input, and how
much of the image no date shows.

``api`` (images read whole) and ``scene`` (GeoTIFFs read window by window) both go through these rules, so a
bad set of dates gets the same one-line error whichever path it takes. ``methods`` checks the count of the
arrays it is given with :func:`check_count` too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import io
from .errors import InputError

#: Dates of one scene a method takes (DiffCR's three; single-image methods use the first).
MAX_DATES = 3

is_tiff = io.is_tiff  # the one TIFF header test (io needs it to pick a reader)


def is_sentinel2(path: str | os.PathLike) -> bool:
    """True for a TIFF that holds Sentinel-2 reflectance: integer DN (x 10000) with band descriptions naming
    B04/B03/B02, or 3-4 undescribed bands (the Sen2_MTC R,G,B[,NIR] default). Header only."""
    if not is_tiff(path):
        return False
    try:
        info = io.tiff_info(path)
    except Exception:
        return False  # the reader gives the real error later
    if info["dtype"] in ("uint8", "int8") or not info["dtype"].startswith(("uint", "int")):
        return False
    names = {str(d).upper() for d in info["descriptions"] if d}
    return {"B04", "B03", "B02"} <= names or (not names and info["count"] in (3, 4))


def check_count(n: int) -> None:
    """1..MAX_DATES dates, else the one dates-count error."""
    if not 1 <= n <= MAX_DATES:
        raise InputError(f"got {n} input images; give 1 to {MAX_DATES} dates of one place")


#: A pixel is *white* where all three display values are at least WHITE_LEVEL and within WHITE_CHROMA of each
#: other: opaque cloud, or snow (display 0.85 is Sentinel-2 reflectance 0.33, above nearly all snow-free ground).
WHITE_LEVEL, WHITE_CHROMA = 0.85, 0.12
#: A note says how much of the image is white on every date from this fraction on.
COVER_NOTE_FROM = 0.1


def white_mask(images: np.ndarray) -> np.ndarray:
    """(..., H, W) True where a pixel of ``images`` (..., C, H, W) display [0, 1] is white (above). Grey images
    (C = 1) count their one channel."""
    rgb = np.asarray(images)[..., :3, :, :]
    return (rgb.min(-3) >= WHITE_LEVEL) & (rgb.max(-3) - rgb.min(-3) <= WHITE_CHROMA)


def white_fraction(dates: np.ndarray) -> float:
    """Fraction of pixels that are white on every date of ``dates`` (D, C, H, W) display [0, 1]: where no date
    shows the ground."""
    return float(white_mask(dates).all(0).mean())


def cover_note(fraction: float) -> str | None:
    """The one note about ground no date shows, or None below COVER_NOTE_FROM."""
    if fraction < COVER_NOTE_FROM:
        return None
    if fraction >= 0.995:
        return ("the whole image is white on every date (opaque cloud or snow): no method can see the ground, "
                "what it paints is a guess; add a date with less cloud")
    return (f"{fraction:.0%} of the image is white on every date (opaque cloud or snow): no method can see the "
            "ground there, what it paints there is a guess")


def whole_image_notes(notes: Sequence[str], tile_fraction: float, fraction: float) -> list[str]:
    """The notes of an image's first tile with that tile's cover note replaced by the whole image's."""
    note, drop = cover_note(fraction), cover_note(tile_fraction)
    return [n for n in notes if n != drop] + ([note] if note else [])


@dataclass(frozen=True)
class Grid:
    """Where a date's pixels lie: size, and CRS + transform when it is georeferenced (else None)."""

    name: str
    width: int
    height: int
    crs: Any = None
    transform: Any = None

    @classmethod
    def of_raster(cls, r: io.Raster) -> "Grid":
        h, w = r.shape
        geo = r.profile if r.is_geo else {}
        return cls(os.path.basename(r.path), w, h, geo.get("crs"), geo.get("transform"))

    @classmethod
    def of_dataset(cls, src: Any, name: str) -> "Grid":
        """From an open rasterio dataset (no pixels read)."""
        geo = src.crs is not None
        return cls(name, src.width, src.height, src.crs if geo else None, src.transform if geo else None)


def _crs_name(crs: Any) -> str:
    try:
        return crs.to_string()
    except Exception:
        return str(crs)


def check_grid(grids: Sequence[Grid]) -> None:
    """Dates of one scene must have the same size and, where both are georeferenced, CRS and transform."""
    first = grids[0]
    n1 = f"date 1 ({first.name})" if first.name else "date 1"
    for i, g in enumerate(grids[1:], 2):
        ni = f"date {i} ({g.name})" if g.name else f"date {i}"
        both_geo = g.crs is not None and first.crs is not None
        if both_geo and g.crs != first.crs:
            raise InputError(f"{ni} has CRS {_crs_name(g.crs)} but {n1} has {_crs_name(first.crs)}; "
                             f"dates of one scene must share CRS, transform and size")
        if (g.width, g.height) != (first.width, first.height):
            raise InputError(f"{ni} is {g.width}x{g.height} but {n1} is {first.width}x{first.height}; "
                             f"dates of one scene must have the same size")
        if both_geo and g.transform != first.transform:
            a, b = g.transform, first.transform
            if (a.a, a.e) != (b.a, b.e):
                what = f"pixel size {a.a:g}x{a.e:g} vs {b.a:g}x{b.e:g}"
            elif (a.c, a.f) != (b.c, b.f):
                what = f"origin ({a.c:g}, {a.f:g}) vs ({b.c:g}, {b.f:g})"
            else:
                what = "rotation terms differ"
            raise InputError(f"{ni} has a different transform than {n1}: {what}; "
                             f"dates of one scene must be on the same grid")


def check_bands(rasters: Sequence[io.Raster]) -> None:
    """Every date has as many bands as the first, and the same data type and scale (8-bit next to 16-bit or
    reflectance next to digital numbers would be read on different scales and compared as if they were one)."""
    first = rasters[0]
    for i, r in enumerate(rasters[1:], 2):
        if len(r.bands) != len(first.bands):
            raise InputError(f"date {i} has {len(r.bands)} bands but date 1 has {len(first.bands)}")
        if (r.dtype, r.scale, r.gain) != (first.dtype, first.scale, first.gain):
            raise InputError(f"date {i} is {r.dtype} read as value / {r.scale:g} but date 1 is {first.dtype} read as "
                             f"value / {first.scale:g}; dates of one scene must share their data type and scale")


def read_dates(paths: Sequence[str | os.PathLike], bands: Sequence[int | str] | str | None = None) -> list[io.Raster]:
    """Read 1-3 dates of one scene and check they agree in size, bands and georeferencing."""
    check_count(len(paths))
    rasters = [io.read_image(p, bands) for p in paths]
    check_grid([Grid.of_raster(r) for r in rasters])
    check_bands(rasters)
    return rasters


def model_input(rasters: Sequence[io.Raster]) -> tuple[np.ndarray, np.ndarray]:
    """(N,C,H,W) display values and the (H,W) mask of pixels valid in every date.

    Invalid pixels (nodata, NaN) are filled with the date's mean valid colour so a model never sees them
    as values; they are written back as nodata.
    """
    valid = np.logical_and.reduce([r.valid for r in rasters])
    dates = []
    for r in rasters:
        d = io.to_display(r)
        if not r.valid.all():
            fill = d[:, r.valid].mean(axis=1) if r.valid.any() else np.zeros(d.shape[0], np.float32)
            d[:, ~r.valid] = fill[:, None]
        dates.append(d)
    c = max(d.shape[0] for d in dates)
    dates = [np.repeat(d, 3, 0) if d.shape[0] == 1 and c == 1 else d for d in dates]
    return np.stack(dates), valid
