"""Per-epoch checkpoints that survive being killed at any moment.

out/checkpoints/epoch_0007/ holds a model folder (config.json, model.safetensors) and train_state.pt
(optimizer, scheduler, grad scaler, epoch, metric history, RNG states). It is written under a temporary
name and renamed when complete, so a folder named epoch_* is always whole; `out/last` is a symbolic link
to the newest one, replaced atomically. `out/best` is the model folder with the best validation top-1,
swapped in the same way (with its checksums.json too). Training state is read with `torch.load(weights_only=True)`: no code runs.

Each checkpoint folder also holds checksums.json (SHA-256 of every other file in it); loading a
checkpoint checks them first, so a truncated or bit-flipped file is refused with one line naming it
instead of resuming silently from damaged state (checkpoints written before checksums still load).
A write that fails (a full disk) removes its temporary folder and leaves the last good checkpoint
and `best` as they were.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from mateffnet.errors import MateffnetError
from mateffnet.fileio import os_error_line, verify_checksums, write_checksums

STATE_FILE = "train_state.pt"
_EPOCH_DIR = re.compile(r"epoch_(\d{4,})")


def save_checkpoint(out_dir: Path, epoch: int, model, state: dict, keep: int = 1) -> Path:
    """Write checkpoint `epoch` (1-based, epochs completed) and point `out/last` at it."""
    folder = Path(out_dir) / "checkpoints"
    final = folder / f"epoch_{epoch:04d}"
    tmp = folder / f".epoch_{epoch:04d}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        torch.save(state, tmp / STATE_FILE)
        write_checksums(tmp)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        last = latest_checkpoint(out_dir)
        kept = f"the last good checkpoint {last} is kept (continue with --resume)" if last else "no checkpoint was kept"
        raise MateffnetError(f"checkpoint of epoch {epoch} not written: {os_error_line(error)}; {kept}") from None
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _point_symlink(Path(out_dir) / "last", Path("checkpoints") / final.name)
    for old in _epoch_dirs(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_best(out_dir: Path, model) -> Path:
    best = Path(out_dir) / "best"
    tmp = Path(out_dir) / f".best.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        write_checksums(tmp)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous {best} is kept" if best.exists() else "no best model was kept"
        raise MateffnetError(f"best model not written: {os_error_line(error)}; {kept}") from None
    old = Path(out_dir) / f".best.{os.getpid()}.old"
    if best.exists():
        os.rename(best, old)
    os.rename(tmp, best)
    shutil.rmtree(old, ignore_errors=True)
    return best


def latest_checkpoint(out_dir: Path) -> Path | None:
    dirs = [d for d in _epoch_dirs(Path(out_dir) / "checkpoints") if (d / STATE_FILE).is_file()]
    return dirs[-1] if dirs else None


def load_train_state(folder: Path) -> dict:
    """The training state of checkpoint `folder`, after checking every file of it against checksums.json."""
    verify_checksums(folder)
    path = Path(folder) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # torch's message goes on to suggest weights_only=False, i.e. running the file's code: never repeat that.
        raise MateffnetError(
            f"{path}: refused: not a training state this mateffnet wrote (it holds objects other than tensors "
            f"and plain values, or it is damaged: {type(error).__name__}); nothing in it was run"
        ) from None


def _epoch_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((d for d in folder.iterdir() if d.is_dir() and _EPOCH_DIR.fullmatch(d.name)),
                  key=lambda d: int(_EPOCH_DIR.fullmatch(d.name)[1]))


def _point_symlink(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) generator states, as plain tensors/ints for weights_only loading."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
