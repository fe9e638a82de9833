"""Content-hashed storage: the teacher's outputs (in memory and on disk) and the cache folder.

A teacher's logits over a dataset are computed once per study and reused by every trial
and every worker process: the file name is a hash of the teacher's weights and the data,
so a changed teacher or dataset can never be served stale outputs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def cache_root(configured: Path | None = None) -> Path:
    """Where built-in teachers and teacher outputs live: ``[teacher].cache_dir``, else
    ``$NASKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/naskd``, else ``~/.cache/naskd``."""
    if configured is not None:
        return configured
    if os.environ.get("NASKD_CACHE_DIR"):
        return Path(os.environ["NASKD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "naskd"


def _umask_mode() -> int:
    """The permissions a plain ``open()`` would give a new file (mkstemp's are private, 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside ``path`` then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` with write-then-rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def state_fingerprint(module: nn.Module) -> str:
    """Hash of a module's parameters and buffers (names, shapes and values)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class TeacherCache:
    """Teacher logits (and internal values) keyed by (teacher fingerprint, data fingerprint, part).

    Args:
        directory: where ``.pt`` files go; ``None`` keeps outputs in memory only.

    ``forward_batches`` counts the teacher forward passes this cache ran, so tests and logs
    can show that outputs were reused rather than recomputed.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._memory: dict[str, torch.Tensor] = {}
        self._values: dict[str, dict[str, torch.Tensor]] = {}
        self.forward_batches = 0

    def logits(self, teacher: nn.Module, teacher_key: str, x: torch.Tensor, data_key: str,
               *, batch_size: int = 1024) -> torch.Tensor:
        key = hashlib.sha256(f"{teacher_key}|{data_key}".encode()).hexdigest()[:24]
        if key in self._memory:
            return self._memory[key]
        path = self.directory / f"{key}.pt" if self.directory is not None else None
        if path is not None and path.is_file():
            out = torch.load(path, weights_only=True)
            log.debug("teacher outputs %s loaded from %s", data_key, path)
        else:
            out = self._compute(teacher, x, batch_size)
            if path is not None:
                atomic_save(out, path)
                log.debug("teacher outputs %s written to %s", data_key, path)
        self._memory[key] = out
        return out

    def values(self, teacher: nn.Module, teacher_key: str, x: torch.Tensor, data_key: str,
               names: list[str], *, budget_bytes: int, batch_size: int = 512) -> dict[str, torch.Tensor] | None:
        """The teacher's internal values (named feature outputs, ``"embedding"``) over ``x``,
        or None when they would not fit ``budget_bytes`` (the caller then recomputes them per step).
        """
        from naskd.knowledge.hooks import Tap

        key = hashlib.sha256(f"{teacher_key}|{data_key}|{sorted(names)}".encode()).hexdigest()[:24]
        if key in self._values:
            return self._values[key]
        path = self.directory / f"{key}.values.pt" if self.directory is not None else None
        if path is not None and path.is_file():
            if path.stat().st_size > budget_bytes:
                return self._over_budget(path.stat().st_size, budget_bytes)
            out = torch.load(path, weights_only=True)
            self._values[key] = out
            return out
        features = [n for n in names if n != "embedding"]
        teacher.eval()
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        with Tap(teacher, features, embedding="embedding" in names) as tap, torch.no_grad():
            for i in range(0, len(x), batch_size):
                teacher(x[i:i + batch_size])
                self.forward_batches += 1
                if i == 0:
                    per_sample = sum(v[0].numel() * v.element_size() for v in tap.values.values())
                    if per_sample * len(x) > budget_bytes:
                        return self._over_budget(per_sample * len(x), budget_bytes)
                for n in names:
                    parts[n].append(tap.values[n].detach().float().cpu())
        out = {n: torch.cat(v) for n, v in parts.items()}
        log.info("teacher features cached (%.0f MB): %s", sum(v.numel() * 4 for v in out.values()) / 2**20,
                 ", ".join(names))
        if path is not None:
            atomic_save(out, path)
        self._values[key] = out
        return out

    @staticmethod
    def _over_budget(size: int, budget_bytes: int) -> None:
        log.info("teacher features need %.1f MB > feature_cache_mb %.1f MB: recomputed every step",
                 size / 2**20, budget_bytes / 2**20)
        return None

    @torch.no_grad()
    def _compute(self, teacher: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        teacher.eval()
        parts = []
        for i in range(0, len(x), batch_size):
            parts.append(teacher(x[i:i + batch_size]).float().cpu())
            self.forward_batches += 1
        return torch.cat(parts)
