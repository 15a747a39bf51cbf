"""Where weights come from: a bundled variant, a local folder, or a Hugging Face Hub repo id.

A weights folder holds ``cloudrm.json`` (method, variant, bands, training data, steps, wall time, validation
numbers) beside diffusers-style subfolders (``unet/``, ``pixel_cr/``, ``vae/``, ``prior/``, ``controlnet_k3/``),
each written by ``save_pretrained`` (safetensors + config.json).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from huggingface_hub import snapshot_download

from .errors import WeightsError, one_line

BUNDLED = Path(__file__).resolve().parent / "bundled_weights"
#: Seconds to wait for the hub's answer (per file) before a one-line error; HF_HUB_ETAG_TIMEOUT overrides.
#: Downloads use huggingface_hub's own timeout (HF_HUB_DOWNLOAD_TIMEOUT, 10 s by default).
HUB_ETAG_TIMEOUT = 5.0


class Family(NamedTuple):
    """The bundled weights of one method: its folder under ``bundled_weights/``, default variant, variants."""

    folder: str
    default: str
    names: tuple[str, ...]


#: method -> its bundled weights (idf-cr folders carry pixel-cr's weights too)
VARIANTS: dict[str, Family] = {
    "pixel-cr": Family("idfcr", "rice2", ("rice1", "rice2", "sen2")),
    "idf-cr": Family("idfcr", "rice2", ("rice1", "rice2", "sen2")),
    "diffcr": Family("diffcr", "sen2", ("sen2", "rice2")),
}
_REPO_RE = re.compile(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$")


def variants_of(method: str) -> tuple[str, ...]:
    """The bundled variant names of ``method`` (none for the baselines)."""
    fam = VARIANTS.get(method)
    return fam.names if fam else ()


def bundled_dir(method: str, variant: str) -> Path:
    return BUNDLED / VARIANTS[method].folder / variant


def read_meta(folder: Path) -> dict[str, Any]:
    f = folder / "cloudrm.json"
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{f}: not valid JSON ({exc.msg})") from None


def resolve(method: str, spec: str | None = None) -> tuple[Path, str]:
    """Return (folder, description) for ``spec``: variant name, local folder or ``owner/name[@rev]``."""
    if method not in VARIANTS:
        raise WeightsError(f"method '{method}' has no weights")
    default, variants = VARIANTS[method].default, VARIANTS[method].names
    spec = spec or default
    if spec in variants:
        folder = bundled_dir(method, spec)
        if not (folder / "cloudrm.json").exists():
            raise WeightsError(f"bundled weights '{spec}' for {method} are not in this checkout ({folder})")
        return folder, f"bundled:{spec}"
    p = Path(os.path.expanduser(spec))
    if p.exists():
        if not p.is_dir():
            raise WeightsError(f"{p}: weights must be a folder (with cloudrm.json), not a file")
        return p, str(p)
    if _REPO_RE.match(spec):
        return _download(spec), f"hub:{spec}"
    raise WeightsError(f"weights '{spec}': not a variant of {method} ({', '.join(variants)}), "
                       f"an existing folder, or a hub repo id owner/name[@revision]")


def hub_snapshot(spec: str, allow_patterns: list[str] | None = None, repo_type: str | None = None) -> Path:
    """Download (or find in the cache) hub repo ``owner/name[@revision]`` with a short answer timeout; the
    process environment is left as it is. Failures (offline, not found, auth) propagate to the caller."""
    repo, _, rev = spec.partition("@")
    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or HUB_ETAG_TIMEOUT)
    return Path(snapshot_download(repo, revision=rev or None, repo_type=repo_type, allow_patterns=allow_patterns,
                                  etag_timeout=timeout))


def _download(spec: str) -> Path:
    """A whole weights folder from the hub; offline or unreachable -> one-line WeightsError."""
    try:
        return hub_snapshot(spec, ["*.json", "*.safetensors", "*/*"])
    except Exception as exc:  # offline, not found, auth: all one line
        msg = one_line(exc)
        raise WeightsError(f"weights '{spec}' could not be fetched from the Hugging Face Hub ({msg[:160]})") from None


def check_method(folder: Path, method: str) -> dict[str, Any]:
    """Read ``cloudrm.json`` and make sure the folder is for ``method`` (idf-cr folders serve pixel-cr too)."""
    meta = read_meta(folder)
    if not meta:
        raise WeightsError(f"{folder}: no cloudrm.json; not a cloudrm weights folder")
    ok = {method} | ({"pixel-cr", "idf-cr"} if method in ("pixel-cr", "idf-cr") else set())
    if meta.get("method") not in ok:
        raise WeightsError(f"{folder}: weights are for '{meta.get('method')}', not '{method}'")
    return meta


def meta_strength(folder: Path, meta: dict[str, Any], key: str) -> float:
    """A sampler start strength from ``cloudrm.json`` (default 1: the full schedule); outside (0, 1] it is a
    one-line WeightsError."""
    value = float(meta.get(key, 1.0))
    if not 0.0 < value <= 1.0:
        raise WeightsError(f"{folder / 'cloudrm.json'}: {key} must be in (0, 1], got {value}")
    return value


def load_model(cls, folder: Path, subfolder: str):
    """``cls.from_pretrained`` with every failure turned into a one-line WeightsError naming the file."""
    path = folder / subfolder
    if not (path / "config.json").exists():
        raise WeightsError(f"{path}: missing (config.json not found)")
    try:
        model = cls.from_pretrained(str(path))
    except Exception as exc:
        msg = one_line(exc)
        files = ", ".join(sorted(p.name for p in path.glob("*.safetensors"))) or "no .safetensors file"
        raise WeightsError(f"{path}: cannot load {files} ({msg[:300]})") from None
    return model.float().eval()  # weights may be stored in fp16; compute in fp32


def load_component(cls, folder: Path, name: str, meta: dict[str, Any]):
    """A part of a weights folder: ``folder/name`` (save_pretrained), the same part of another folder named
    (relative to this one) by the metadata's ``{"folder": ...}``, or ``{"hub": "owner/name[@rev]",
    "subfolder": ...}`` (e.g. a Stable Diffusion VAE or U-Net). Returned in fp32 for inference (local
    weights may be stored in fp16); any failure is a one-line WeightsError naming the part."""
    comp = (meta.get("components") or {}).get(name) or {}
    if (folder / name / "config.json").exists() or not (comp.get("folder") or comp.get("hub")):
        return load_model(cls, folder, name)  # a missing part raises here, naming its folder
    if comp.get("folder"):
        # another bundled variant's part, e.g. rice1 uses rice2's VAE and prior: {"folder": "../rice2"}
        return load_model(cls, (folder / comp["folder"]).resolve(), name)
    hub, sub = str(comp["hub"]), comp.get("subfolder")
    try:
        local = hub_snapshot(hub, [f"{sub}/*"] if sub else None)
        model = cls.from_pretrained(str(local), subfolder=sub)
    except Exception as exc:  # offline, missing, auth: one line
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        offline = " while offline (HF_HUB_OFFLINE is set)" if offline else ""
        raise WeightsError(f"{name}: '{hub}' could not be loaded from the Hugging Face Hub{offline} "
                           f"({one_line(exc)[:160]})") from None
    return model.eval().float()


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Write ``cloudrm.json``; paths in the user's home are written from ``~/`` (a committed file names no
    home directory nor user)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, indent=2, default=str)
    home = str(Path.home()).rstrip("/")
    if home:
        text = text.replace(json.dumps(home + "/")[1:-1], "~/")
    (folder / "cloudrm.json").write_text(text)


def variants_present(method: str) -> list[str]:
    """The bundled variants of ``method`` whose folder has a ``cloudrm.json`` in this checkout."""
    if method not in VARIANTS:
        return []
    return [v for v in VARIANTS[method].names if (bundled_dir(method, v) / "cloudrm.json").exists()]


def spec_for(method: str, choice: str | None) -> str | None:
    """The ``--weights`` spec for ``method`` given a variant choice (None or "default": the method's default).

    A variant the method does not have falls back to the closest one present (rice1 <-> rice2), else the
    default, else any bundled variant; any other value (a folder or a hub repo id) is passed through."""
    if method not in VARIANTS:
        return None
    default = VARIANTS[method].default
    present = variants_present(method)
    if choice and choice != "default":
        if not any(choice in f.names for f in VARIANTS.values()):
            return choice
        if choice in present:
            return None if choice == default else choice
        near = {"rice1": "rice2", "rice2": "rice1"}.get(choice)
        if near in present:
            return None if near == default else near
    if default in present or not present:
        return None
    return present[0]


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def _fmt_data(data: Any) -> str:
    """Training data of a cloudrm.json component: the dataset lists, else everything."""
    if isinstance(data, dict):
        names = [str(x) for k in ("rice", "clear", "scenes", "train") for x in (data.get(k) or [])
                 if isinstance(data.get(k), (list, tuple))]
        if names:
            extra = f" ({data['crop']} px crops)" if data.get("crop") else ""
            return ", ".join(names) + extra
    return _fmt_value(data) if data else "-"


def summary_table() -> str:
    """Markdown rows from each bundled weights folder's cloudrm.json (nothing retyped)."""
    rows = []
    seen = set()
    for method in VARIANTS:
        for variant in variants_present(method):
            folder = bundled_dir(method, variant)
            if folder in seen:
                continue
            seen.add(folder)
            try:
                meta = read_meta(folder)
            except WeightsError as exc:
                rows.append(f"| {folder.parent.name}/{variant} | - | - | - | {one_line(exc)} |")
                continue
            comps = meta.get("components") or {"": meta}
            for sub, c in comps.items():
                if not isinstance(c, dict):
                    continue
                if c.get("folder"):  # a part shared with another bundled variant
                    rows.append(f"| {folder.parent.name}/{variant} ({meta.get('method', '?')}) | {sub} | "
                                f"shared: {c['folder']}/{sub} | - | - |")
                    continue
                val = c.get("validation")
                val_txt = _fmt_value({k: v for k, v in val.items() if k != "val_seconds"}) if isinstance(val, dict) else "-"
                data_txt = _fmt_data(c.get("training_data"))
                if isinstance(c.get("averaged_from"), list):  # a soup (``cloudrm average``): each source's data
                    data_txt = "mean of " + "; ".join(
                        f"{float(src.get('share', 0)):.0%} {_fmt_data(src.get('training_data'))}"
                        for src in c["averaged_from"] if isinstance(src, dict))
                train = []
                if c.get("trained_steps") is not None:
                    train.append(f"{c['trained_steps']} steps")
                if c.get("train_minutes") is not None:
                    train.append(f"{c['train_minutes']} min")
                if c.get("hardware"):
                    train.append(str(c["hardware"]))
                rows.append(f"| {folder.parent.name}/{variant} ({meta.get('method', '?')}) | {sub or '-'} | "
                            f"{data_txt} | {', '.join(train) or '-'} | {val_txt} |")
    if not rows:
        return "_No bundled weights in this checkout yet: only identity and median run._"
    head = ("| weights | part | training data | training | validation (held-out, from cloudrm.json) |\n"
            "|---|---|---|---|---|\n")
    return head + "\n".join(rows)
