"""Content-hashed storage: the teacher's outputs (in memory and on disk) and the cache folder.

A teacher's logits over a dataset are computed once per study and reused by every trial
and every worker process: the file name is a hash of the teacher's weights and the data,
so a changed teacher or dataset can never be served stale outputs.

Every cache file (teacher outputs here, built-in teacher weights in ``naskd.teacher``) is an
*entry*: ``{"key": <what it was built for>, "sha256": <checksum of the tensors>, "payload":
<a tensor or a dict of tensors>}``, read back with ``torch.load(weights_only=True)``. An entry
that cannot be read, has another structure (files of earlier versions held bare tensors),
was built for another key or whose tensors no longer match their checksum is reported in
one warning line and never used: the caller derives it again and overwrites it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from naskd.errors import NaskdError

log = logging.getLogger(__name__)


def cache_root(configured: Path | None = None) -> Path:
    """Where built-in teachers and teacher outputs live: ``[teacher].cache_dir``, else
    ``$NASKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/naskd``, else ``~/.cache/naskd``.

    Raises:
        NaskdError: that path (or a folder above it) exists and is not a folder.
    """
    if configured is not None:
        root, origin = configured, "[teacher].cache_dir"
    elif os.environ.get("NASKD_CACHE_DIR"):
        root, origin = Path(os.environ["NASKD_CACHE_DIR"]), "$NASKD_CACHE_DIR"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root, origin = Path(base) / "naskd", "the cache folder"
    _check_folder(root, origin)
    return root


def _check_folder(root: Path, origin: str) -> None:
    """``root`` can be a folder: it is one, or the nearest existing path above it is one."""
    for path in (root, *root.parents):
        if path.is_dir():
            return
        if path.exists() or path.is_symlink():
            where = "is" if path == root else f"is inside {path}, which is"
            raise NaskdError(f"{origin} {root}: {where} a file, not a folder; give a folder for the teacher cache")


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


# --- checksummed cache entries -------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: Phrases of torch's weights_only unpickler when a *valid* pickle wants to build objects
#: other than tensors (loading it unrestricted would run code); anything else it raises means
#: the bytes are not a loadable checkpoint at all.
_CODE_REFUSALS = (
    "Unsupported global",
    "is blocked",
    "unrecognized function",
    "Can only create new object",
    "Can only build Tensor",
)


def is_code_refusal(exc: BaseException, path: Path) -> bool:
    """Whether a ``torch.load(weights_only=True)`` error on ``path`` is the refusal of a real
    checkpoint that holds more than tensors (rather than a file that is damaged or not a
    checkpoint at all). The file must also look like one a ``torch.save`` writes (a zip archive,
    or a pickle of protocol 2 or later): garbage that happens to start with a pickle's GLOBAL
    opcode (a text file beginning with "c") is refused in the same words, yet it is no checkpoint."""
    if not (isinstance(exc, pickle.UnpicklingError) and any(p in str(exc) for p in _CODE_REFUSALS)):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def load_error_reason(exc: BaseException, path: Path | None = None) -> str:
    """One plain line saying why ``torch.load`` could not read a file (torch's own messages
    are long, multi-line and ANSI-coloured)."""
    try:
        if path is not None and path.is_file() and path.stat().st_size == 0:
            return "the file is empty"
    except OSError:
        pass
    text = str(exc)
    inner = exc.__context__
    if isinstance(exc, pickle.UnpicklingError):
        if isinstance(inner, pickle.UnpicklingError) and str(inner):
            text = str(inner)  # the unpickler's own words, without torch's advice around them
        elif "WeightsUnpickler error:" in text:
            text = text.split("WeightsUnpickler error:", 1)[1]
        text = "unpickling failed: " + re.split(r"(?<=\.)\s", text.strip(), maxsplit=1)[0]
    if isinstance(exc, EOFError) and not text.strip():
        text = "the file ends early (truncated)"
    if isinstance(exc, OSError) and exc.errno == errno.EINVAL and exc.filename is None:
        text = f"a damaged or truncated archive: {text}"  # what torch's zip reader says for a cut-off file
    line = next((ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()), "")
    line = re.sub(r"\. This is an internal miniz error.*", ".", line)  # torch's advice after the cause
    if len(line) > 200:
        line = line[:197] + "..."
    return line or type(exc).__name__


def content_sha256(payload: Any) -> str | None:
    """sha256 of a tensor or of a dict of named tensors: names, dtypes, shapes and bytes.
    None when ``payload`` is neither."""
    if isinstance(payload, torch.Tensor):
        items, kind = [("", payload)], b"tensor"
    elif isinstance(payload, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()
    ):
        items, kind = sorted(payload.items()), b"dict"
    else:
        return None
    h = hashlib.sha256(kind)
    for name, tensor in items:
        t = tensor.detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_entry(path: Path, key: str, payload: Any) -> None:
    """Write ``payload`` (a tensor or a dict of tensors) to ``path`` as a checksummed entry
    built for ``key``, atomically. A cache that cannot be written is a warning, not an error:
    the run goes on with what it computed."""
    entry = {"key": key, "sha256": content_sha256(payload), "payload": payload}
    try:
        atomic_save(entry, path)
    except (OSError, RuntimeError) as exc:  # torch.save says RuntimeError for a full disk
        log.warning("cache file %s could not be written (%s); going on without it", path, exc)


def load_entry(path: Path, key: str, what: str, *, action: str = "rebuilding it") -> Any | None:
    """The payload of the entry at ``path`` if it was built for ``key`` and its checksum
    holds; otherwise one warning line (``what``, the file, the fault and ``action``) and None:
    the caller derives the payload again and overwrites the file."""
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (whatever torch raises, the file is unusable)
        log.warning("%s %s is not readable (%s); %s", what, path, load_error_reason(exc, path), action)
        log.debug("reading %s failed", path, exc_info=True)
        return None
    problem = _entry_problem(entry, key)
    if problem is not None:
        log.warning("%s %s: %s; %s", what, path, problem, action)
        return None
    return entry["payload"]


def _entry_problem(entry: Any, key: str) -> str | None:
    if not (isinstance(entry, dict) and {"key", "sha256", "payload"} <= set(entry)):
        if content_sha256(entry) is not None:
            return "has no checksum (written by an earlier naskd version; rebuilt once in the new format)"
        return f"has an unexpected structure ({type(entry).__name__}, not a checksummed cache entry)"
    if entry["key"] != key:
        found = str(entry["key"])
        return f"was built for another key ({found[:80] + '...' if len(found) > 80 else found})"
    actual = content_sha256(entry["payload"])
    if actual is None:
        return f"has an unexpected structure (payload is {type(entry['payload']).__name__})"
    if actual != entry["sha256"]:
        return "checksum mismatch: altered or damaged"
    return None


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

    def logits(
        self, teacher: nn.Module, teacher_key: str, x: torch.Tensor, data_key: str, *, batch_size: int = 1024
    ) -> torch.Tensor:
        source = f"{teacher_key}|{data_key}"
        key = hashlib.sha256(source.encode()).hexdigest()[:24]
        if key in self._memory:
            return self._memory[key]
        path = self.directory / f"{key}.pt" if self.directory is not None else None
        out = None
        if path is not None and path.is_file():
            out = load_entry(path, f"logits|{source}", "teacher outputs cache", action="recomputing it")
            if out is not None and (not isinstance(out, torch.Tensor) or out.ndim != 2 or len(out) != len(x)):
                held = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                log.warning("teacher outputs cache %s: holds %s for %d samples; recomputing it", path, held, len(x))
                out = None
            if out is not None:
                log.debug("teacher outputs %s loaded from %s", data_key, path)
        if out is None:
            out = self._compute(teacher, x, batch_size)
            if path is not None:
                save_entry(path, f"logits|{source}", out)
                log.debug("teacher outputs %s written to %s", data_key, path)
        self._memory[key] = out
        return out

    def values(
        self,
        teacher: nn.Module,
        teacher_key: str,
        x: torch.Tensor,
        data_key: str,
        names: list[str],
        *,
        budget_bytes: int,
        batch_size: int = 512,
    ) -> dict[str, torch.Tensor] | None:
        """The teacher's internal values (named feature outputs, ``"embedding"``) over ``x``,
        or None when they would not fit ``budget_bytes`` (the caller then recomputes them per step).
        """
        from naskd.knowledge.hooks import Tap

        source = f"{teacher_key}|{data_key}|{sorted(names)}"
        key = hashlib.sha256(source.encode()).hexdigest()[:24]
        if key in self._values:
            return self._values[key]
        path = self.directory / f"{key}.values.pt" if self.directory is not None else None
        if path is not None and path.is_file():
            if path.stat().st_size > budget_bytes:
                return self._over_budget(path.stat().st_size, budget_bytes)
            cached = load_entry(path, f"values|{source}", "teacher values cache", action="recomputing it")
            if cached is not None and (
                not isinstance(cached, dict)
                or set(cached) != set(names)
                or any(len(v) != len(x) for v in cached.values())
            ):
                log.warning(
                    "teacher values cache %s: holds %s for %d samples, expected %s; recomputing it",
                    path,
                    sorted(cached) if isinstance(cached, dict) else type(cached).__name__,
                    len(x),
                    sorted(names),
                )
                cached = None
            if cached is not None:
                self._values[key] = cached
                return cached
        features = [n for n in names if n != "embedding"]
        teacher.eval()
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        with Tap(teacher, features, embedding="embedding" in names) as tap, torch.no_grad():
            for i in range(0, len(x), batch_size):
                teacher(x[i : i + batch_size])
                self.forward_batches += 1
                if i == 0:
                    per_sample = sum(v[0].numel() * v.element_size() for v in tap.values.values())
                    if per_sample * len(x) > budget_bytes:
                        return self._over_budget(per_sample * len(x), budget_bytes)
                for n in names:
                    parts[n].append(tap.values[n].detach().float().cpu())
        out = {n: torch.cat(v) for n, v in parts.items()}
        log.info(
            "teacher features cached (%.0f MB): %s", sum(v.numel() * 4 for v in out.values()) / 2**20, ", ".join(names)
        )
        if path is not None:
            save_entry(path, f"values|{source}", out)
        self._values[key] = out
        return out

    @staticmethod
    def _over_budget(size: int, budget_bytes: int) -> None:
        log.info(
            "teacher features need %.1f MB > feature_cache_mb %.1f MB: recomputed every step",
            size / 2**20,
            budget_bytes / 2**20,
        )
        return None

    @torch.no_grad()
    def _compute(self, teacher: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        teacher.eval()
        parts = []
        for i in range(0, len(x), batch_size):
            parts.append(teacher(x[i : i + batch_size]).float().cpu())
            self.forward_batches += 1
        return torch.cat(parts)
