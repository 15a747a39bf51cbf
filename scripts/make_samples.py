"""Write the app's built-in real samples (assets/samples/) from the SEN12MS-CR folder of a data root.

    CLOUDRM_DATA=../shared/data python scripts/make_samples.py

SEN12MS-CR is CC-BY 4.0; the samples are a handful of 256 px patches from the project's *validation* regions
(never trained on), with ATTRIBUTION.md beside them. One-date samples are the real files as published; a
three-date sample is the real cloudy date plus two dates made from the clear date with real cloud layers of
the *training* regions (cloudrm.cloudbank) and date-to-date ground change -- its notes say so.

The committed three-date samples were made with the bank of 36 layers, before the snow pairs were left out of it
(cloudbank.teaches_removal): a run now draws its made dates from the 33 layers, so they differ.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


from cloudrm import datasets, io

OUT = Path(__file__).resolve().parents[1] / "assets" / "samples"
#: (folder under SEN12MS-CR, sample name, dates): validation regions / validation masked ids only
CHOICE = [
    ("pairs/ROIs1868_summer_102_p100", "Sentinel-2 cumulus and shadow (summer)", 1),
    ("pairs/ROIs1868_summer_102_p500", "Sentinel-2 haze over fields (summer)", 1),
    ("masked/4438", "Sentinel-2 cumulus over fields", 1),
    ("masked/4294", "Sentinel-2 thick cumulus over a town", 1),
    ("pairs/ROIs2017_winter_102_p926", "Sentinel-2 haze over fields (winter)", 1),
    ("masked/4438", "Sentinel-2 cumulus, 3 dates", 3),
    ("pairs/ROIs1868_summer_102_p500", "Sentinel-2 haze, 3 dates", 3),
]
#: what a visitor should know about a sample beyond where it comes from (by sample name)
EXTRA_NOTES = {
    "Sentinel-2 cumulus and shadow (summer)": [
        "the large shadow's cloud lies outside the patch: from one date the models lift little of it "
        "(README, Real Sentinel-2 clouds); with more dates DiffCR can take that ground from a clear one"],
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def main() -> int:
    root = datasets.data_root()
    if root is None or not (root / "SEN12MS-CR").is_dir():
        print("error: set CLOUDRM_DATA to a data root with SEN12MS-CR/", file=sys.stderr)
        return 2
    s2 = root / "SEN12MS-CR"
    bank = datasets.train_bank(s2, ["pairs", "masked"])
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    manifest = []
    for k, (rel, name, n) in enumerate(CHOICE):
        src = s2 / rel
        assert datasets.s2_is_validation(src.name), f"{rel} is not in a validation region"
        folder = OUT / slug(name)
        folder.mkdir()
        clear = folder / "clear.tif"
        shutil.copyfile(src / "clear.tif", clear)
        if n == 1:
            shutil.copyfile(src / "cloudy_0.tif", folder / "cloudy_0.tif")
            notes = ["a real cloudy Sentinel-2 date and a cloud-free date of the same place, days to weeks "
                     "apart (the reference also differs by real ground change)"]
        else:
            item = {"dates": io.to_display(io.to_rgb(io.read_image(src / "cloudy_0.tif")))[None],
                    "target": io.to_display(io.to_rgb(io.read_image(clear)))}
            dates = datasets.s2_stack(item, bank, seed=k)
            like = io.to_rgb(io.read_image(clear))
            for i, d in enumerate(dates):
                io.write_image(folder / f"cloudy_{i}.tif", d, like=like)
            notes = ["date 1 is a real cloudy Sentinel-2 date; dates 2 and 3 are the clear date with real cloud "
                     "layers (measured on other SEN12MS-CR pairs) and simulated ground change"]
        notes += EXTRA_NOTES.get(name, [])
        dates_ = sorted(p.name for p in folder.glob("cloudy_*.tif"))
        manifest.append({"name": name, "group": "Sentinel-2", "dates": dates_, "reference": "clear.tif",
                         "folder": folder.name, "origin": f"SEN12MS-CR {src.name}", "notes": notes})
    (OUT / "samples.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (OUT / "ATTRIBUTION.md").write_text(ATTRIBUTION)
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {len(manifest)} samples to {OUT} ({size / 1e6:.1f} MB)")
    return 0


ATTRIBUTION = """# Built-in samples: attribution

The GeoTIFFs in this folder are small patches (256 x 256 px, 10 m, bands B04, B03, B02[, B08] as uint16
reflectance x 10000) from **SEN12MS-CR** / **SEN12MS-CR-TS**:

> P. Ebel, Y. Xu, M. Schmitt, X. X. Zhu, "SEN12MS-CR-TS: A Remote-Sensing Data Set for Multimodal
> Multitemporal Cloud Removal", IEEE TGRS 2022; P. Ebel, A. Meraner, M. Schmitt, X. X. Zhu, "Multisensor
> Data Fusion for Cloud Removal in Global and All-Season Sentinel-2 Imagery", IEEE TGRS 2020.
> Technical University of Munich. Licensed under CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/).

Contains modified Copernicus Sentinel data 2017-2018.

Changes made here: converted to 4-band GeoTIFFs (by the public repository the project's data folder was taken
from); for the "3 dates" samples, dates 2 and 3 were *made* by cloudrm (`scripts/make_samples.py`): the
clear date with real cloud layers estimated from other SEN12MS-CR pairs (cloudrm.cloudbank) and simulated
ground change, written as 3-band (B04, B03, B02) GeoTIFFs. The patches come from regions the project keeps
for validation, so no model shipped here was trained on them.
"""

if __name__ == "__main__":
    raise SystemExit(main())
