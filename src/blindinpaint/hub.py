"""Released weights: export a training run, load exports / runs / named models.

An *export* is a folder with two files::

    model.safetensors   the weights (float16 storage by default; loaded as float32)
    config.json         {"format": "blindinpaint-export", "task", "model", "model_config",
                         "data", "training", "extra", "dtype", "sha256": {"model.safetensors": HEX}}

``load(name_or_path)`` accepts an export folder, a run directory (its latest or
best checkpoint), a checkpoint file, or a model *name*: looked up in the user
folder ``$BLINDINPAINT_HOME`` (default ``~/.cache/blindinpaint``) first, then in
the models bundled with the package (``blindinpaint/weights/<name>/``).  The
SHA-256 of ``model.safetensors`` is checked on every load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import UserError

log = logging.getLogger(__name__)

EXPORT_FORMAT = "blindinpaint-export"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
BUNDLED_DIR = Path(__file__).resolve().parent / "weights"
FP16_MAX = 65504.0
_LOCAL_PATH_KEYS = ("root", "noise_root", "assets")  # machine-specific: not part of a release


def home() -> Path:
    """The user model folder: ``$BLINDINPAINT_HOME`` or ``~/.cache/blindinpaint``."""
    env = os.environ.get("BLINDINPAINT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "blindinpaint"


@dataclass
class LoadedModel:
    """Weights plus everything needed to rebuild the module.

    ``state_dict`` is float32 (whatever the storage) on the requested device;
    ``model`` is the key into ``blindinpaint.models.registry.MODELS`` and
    ``model_config`` the dict its builder takes.
    """

    task: str
    model: str
    model_config: dict
    state_dict: dict[str, Tensor]
    meta: dict = field(default_factory=dict)   # the config.json content
    source: str = ""

    @property
    def extra(self) -> dict:
        return dict(self.meta.get("extra") or {})


# -------------------------------------------------------------------- export
def checkpoint_weights(ckpt: dict, use_ema: bool = True) -> dict[str, Tensor]:
    """The flat export state dict of a training checkpoint (EMA weights when present)."""
    spec = ckpt["export"]
    source = ckpt["ema"] if use_ema and ckpt.get("ema") else ckpt["modules"]
    out: dict[str, Tensor] = {}
    for prefix, name in spec["modules"].items():
        state = source.get(name, ckpt["modules"].get(name))
        if state is None:
            raise UserError(f"the checkpoint has no module '{name}' to export")
        for key, value in state.items():
            out[f"{prefix}.{key}" if prefix else key] = value
    return out


def _meta_from_checkpoint(ckpt: dict, ckpt_path: Path, used_ema: bool) -> dict:
    spec = ckpt["export"]
    config = ckpt.get("config", {})
    data = {k: v for k, v in (config.get("data") or {}).items() if k not in _LOCAL_PATH_KEYS}
    summary = ckpt.get("summary", {})
    return {
        "format": EXPORT_FORMAT,
        "version": 1,
        "task": ckpt["task"],
        "model": spec["model"],
        "model_config": spec["config"],
        "extra": spec.get("extra") or {},
        "data": data,
        "training": {
            "checkpoint": ckpt_path.name,
            "step": int(ckpt["step"]),
            "phase": ckpt.get("phase"),
            "images_seen": int(summary.get("images_seen", 0)),
            "train_seconds": round(float(summary.get("train_seconds", 0.0)), 1),
            "world_size": int(summary.get("world_size", 1)),
            "seed": (config.get("train") or {}).get("seed"),
            "ema": used_ema,
            "val": ckpt.get("val", {}),
        },
    }


def _storage(tensors: dict[str, Tensor], fp16: bool) -> tuple[dict[str, Tensor], str]:
    """Contiguous CPU copies; float tensors as float16 when asked and when they fit its range."""
    out, kept = {}, []
    for key, value in tensors.items():
        value = value.detach().cpu().contiguous().clone()
        if value.is_floating_point():
            value = value.float()
            if fp16:
                if value.numel() and value.abs().max().item() > FP16_MAX:
                    kept.append(key)  # would overflow to inf: keep float32
                else:
                    value = value.half()
        out[key] = value
    if kept:
        log.info("kept %d tensor(s) in float32 (values beyond the float16 range), e.g. %s", len(kept), kept[0])
    return out, ("float16" if fp16 else "float32")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_export(weights: dict[str, Tensor], meta: dict, out_dir: str | Path, fp16: bool) -> Path:
    """The one writer of an export folder: atomic ``model.safetensors`` (float16 storage when ``fp16``
    and the values fit), its SHA-256 and ``dtype`` recorded in ``meta``, then an atomic ``config.json``."""
    from safetensors.torch import save_file

    tensors, meta["dtype"] = _storage(weights, fp16)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=out_dir)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": EXPORT_FORMAT, "task": meta["task"]})
        meta["sha256"] = {WEIGHTS_FILE: sha256_file(tmp)}
        os.replace(tmp, out_dir / WEIGHTS_FILE)
    finally:
        Path(tmp).unlink(missing_ok=True)
    tmp_json = out_dir / (CONFIG_FILE + ".tmp")
    tmp_json.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    os.replace(tmp_json, out_dir / CONFIG_FILE)
    return out_dir


def save_export(module: nn.Module, task: str, model_name: str, model_config: dict, out_dir: str | Path,
                fp16: bool = True, extra: dict | None = None) -> Path:
    """Write ``module``'s weights as an export folder (no training run needed); returns ``out_dir``.

    ``model_name`` is the key into ``blindinpaint.models.registry.MODELS`` and ``model_config`` the
    dict its builder takes; ``extra`` is stored as the config's ``extra`` (e.g. calibration values).
    """
    meta = {"format": EXPORT_FORMAT, "version": 1, "task": task, "model": model_name,
            "model_config": dict(model_config), "extra": dict(extra or {})}
    return _write_export(module.state_dict(), meta, out_dir, fp16)


def export(run_or_checkpoint: str | Path, out_dir: str | Path, fp16: bool = True, which: str = "latest",
           use_ema: bool = True, drop_refiner: bool = False) -> Path:
    """Write ``out_dir/model.safetensors`` + ``out_dir/config.json`` from a run or checkpoint.

    ``which``: a run directory's ``latest`` or ``best`` checkpoint.  ``use_ema``: export the
    EMA weights when the run kept them.  ``drop_refiner``: for an HCL run stopped in phase 1 (its
    refiner never trained), export without the refiner (``refiner_width: 0``) so the exported
    model outputs ``rec``.  Returns ``out_dir``.
    """
    from .train.checkpoint import find_checkpoint, load_checkpoint

    ckpt_path = find_checkpoint(run_or_checkpoint, which)
    ckpt = load_checkpoint(ckpt_path)
    used_ema = bool(use_ema and ckpt.get("ema"))
    weights = checkpoint_weights(ckpt, use_ema)
    meta = _meta_from_checkpoint(ckpt, ckpt_path, used_ema)
    if drop_refiner:
        if "refiner_width" not in meta["model_config"]:
            raise UserError(f"--drop-refiner: {ckpt_path} is not an HCL model (its config has no refiner_width)")
        weights = {k: v for k, v in weights.items() if not k.startswith("refiner.")}
        meta["model_config"]["refiner_width"] = 0
    out_dir = _write_export(weights, meta, out_dir, fp16)
    size_mb = (out_dir / WEIGHTS_FILE).stat().st_size / 1e6
    log.info("exported %s (step %d, %s, %.1f MB) to %s", ckpt_path, meta["training"]["step"], meta["dtype"], size_mb,
             out_dir)
    return out_dir


def export_main(args: argparse.Namespace) -> int:
    """Runner of ``blindinpaint export RUN -o DIR [--fp32] [--checkpoint latest|best] [--no-ema]``."""
    out = export(args.run, args.out, fp16=not args.fp32, which=getattr(args, "checkpoint", "latest"),
                 use_ema=not getattr(args, "no_ema", False), drop_refiner=getattr(args, "drop_refiner", False))
    print(out / WEIGHTS_FILE)
    return 0


# ---------------------------------------------------------------------- load
def _is_export(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def _named_folder(name: str) -> Path | None:
    for base in (home(), BUNDLED_DIR):
        folder = base / name
        if _is_export(folder):
            return folder
    return None


def load_export(folder: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load an export folder, checking the SHA-256 recorded in its config.json."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {folder / CONFIG_FILE}: {exc}") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise UserError(f"{folder / CONFIG_FILE} is not a blindinpaint export config")
    expected = (meta.get("sha256") or {}).get(WEIGHTS_FILE)
    if not expected:
        raise UserError(f"{folder / CONFIG_FILE} records no SHA-256 for {WEIGHTS_FILE}")
    actual = sha256_file(folder / WEIGHTS_FILE)
    if actual != expected:
        raise UserError(f"{folder / WEIGHTS_FILE} is damaged or was modified: SHA-256 {actual[:12]}... "
                        f"does not match {expected[:12]}... recorded in config.json")
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE), device="cpu")
    except SafetensorError as exc:
        raise UserError(f"cannot read {folder / WEIGHTS_FILE}: {exc}") from None
    return LoadedModel(task=meta["task"], model=meta["model"], model_config=meta["model_config"],
                       state_dict=_compute_dtype(tensors, device), meta=meta, source=str(folder))


def load_checkpoint_model(path: str | Path, device: str | torch.device = "cpu", which: str = "latest",
                          use_ema: bool = True) -> LoadedModel:
    """Load the export weights of a training run / checkpoint without exporting it first."""
    from .train.checkpoint import find_checkpoint, load_checkpoint

    ckpt_path = find_checkpoint(path, which)
    ckpt = load_checkpoint(ckpt_path)
    used_ema = bool(use_ema and ckpt.get("ema"))
    meta = _meta_from_checkpoint(ckpt, ckpt_path, used_ema)
    meta["dtype"] = "float32"
    return LoadedModel(task=meta["task"], model=meta["model"], model_config=meta["model_config"],
                       state_dict=_compute_dtype(checkpoint_weights(ckpt, use_ema), device), meta=meta,
                       source=str(ckpt_path))


def _compute_dtype(tensors: dict[str, Tensor], device) -> dict[str, Tensor]:
    """Float tensors -> float32 on ``device`` (fp16 is storage only; compute is fp32)."""
    return {k: (v.float() if v.is_floating_point() else v).to(device) for k, v in tensors.items()}


def load(name_or_path: str | Path, device: str | torch.device = "cpu", which: str = "latest") -> LoadedModel:
    """An export folder, a run directory (``which`` checkpoint), a checkpoint file or a model name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if _is_export(path):
            return load_export(path, device)
        return load_checkpoint_model(path, device, which)
    if path.is_file():
        if path.name in (WEIGHTS_FILE, CONFIG_FILE) and _is_export(path.parent):
            return load_export(path.parent, device)
        return load_checkpoint_model(path, device)
    name = str(name_or_path)
    folder = _named_folder(name) if name and "/" not in name and os.sep not in name else None
    if folder is not None:
        return load_export(folder, device)
    known = ", ".join(m["name"] for m in list_models()) or "none installed"
    raise UserError(f"no model '{name}': not a file, folder or known model name (known models: {known})")


def build_model(loaded: LoadedModel, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the module through ``blindinpaint.models.registry.MODELS`` and load the weights (eval mode)."""
    from .models.registry import MODELS

    if loaded.model not in MODELS:
        raise UserError(f"{loaded.source} needs model '{loaded.model}', which this version of blindinpaint "
                        f"does not have (known: {', '.join(sorted(MODELS))})")
    from .train.checkpoint import load_module_state

    module = MODELS[loaded.model](loaded.model_config)
    load_module_state(module, loaded.state_dict, loaded.model, loaded.source)
    return module.to(device).eval()


def list_models() -> list[dict]:
    """Installed models: ``{"name", "source" ("user" | "bundled"), "path", "task", "model", "mb"}``.

    A user model shadows a bundled one of the same name (it is listed once, as "user").
    """
    found: dict[str, dict] = {}
    for source, base in (("user", home()), ("bundled", BUNDLED_DIR)):
        if not base.is_dir():
            continue
        for folder in sorted(p for p in base.iterdir() if _is_export(p)):
            if folder.name in found:
                continue
            try:
                meta = json.loads((folder / CONFIG_FILE).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            found[folder.name] = {"name": folder.name, "source": source, "path": str(folder),
                                  "task": meta.get("task"), "model": meta.get("model"),
                                  "mb": round((folder / WEIGHTS_FILE).stat().st_size / 1e6, 2)}
    return list(found.values())
