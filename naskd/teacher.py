"""The teachers: a user model loaded safely (``weights_only``) or from TorchScript, or a
built-in teacher trained on first use and cached under a content hash; one or several.

The hash covers the data, the architecture (name and version) and the training recipe, so
a later run with the same inputs reuses the weights and any change retrains. The cached
weights are a checksummed entry (``naskd.cache.save_entry``) that records that key: a damaged
or altered file is reported and the teacher retrained, never loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from naskd.cache import (
    atomic_write_bytes,
    cache_root,
    is_code_refusal,
    load_entry,
    load_error_reason,
    save_entry,
    state_fingerprint,
)
from naskd.config import CostConfig, DistillConfig, TeacherConfig
from naskd.data import Data
from naskd.distill import Scratch, train
from naskd.errors import NaskdError
from naskd.measure import measure_cost
from naskd.scoring import score
from naskd.spaces import BuildContext

log = logging.getLogger(__name__)

#: Bump when a built-in teacher's architecture, recipe or training code changes (2: fused Adam),
#: so caches made by older code are not reused.
BUILTIN_VERSION = 2


@dataclass
class Teacher:
    """A teacher in eval mode; ``fingerprint`` hashes its weights (names its cached outputs);
    ``rebuild`` makes a fresh, untrained model of its architecture (None for TorchScript)."""

    model: nn.Module
    source: str
    fingerprint: str
    name: str = "teacher"
    weight: float = 1.0
    rebuild: Callable[[], nn.Module] | None = None

    def trained_copy(self) -> nn.Module:
        """A new model of the teacher's architecture holding its trained weights, in eval mode
        (rebuilt rather than deep-copied, so hooks on the teacher are not carried over)."""
        if self.rebuild is None:
            raise NaskdError(f"{self.source}: a TorchScript teacher's architecture cannot be rebuilt")
        model = self.rebuild()
        model.load_state_dict(self.model.state_dict())
        return model.to(next((p.device for p in self.model.parameters()), torch.device("cpu"))).eval()

    def build_context(self, input_shape: tuple[int, ...], num_classes: int) -> BuildContext:
        """What student builders receive from this teacher: its architecture's factory, its
        trained weights and its fingerprint (families derived from the teacher read them)."""
        rebuildable = self.rebuild is not None
        return BuildContext(
            input_shape,
            num_classes,
            teacher=self.rebuild,
            trained_teacher=self.trained_copy if rebuildable else None,
            teacher_fingerprint=self.fingerprint,
        )


class _ConvTeacher(nn.Module):
    """Conv stages (named ``stages.i`` so features can be hooked), then a linear head over the
    flattened map: position matters in MNIST-1D, so no global pooling."""

    def __init__(self, dims: int, channels: list[int], in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        stages, c_in = [], in_shape[0]
        for i, c_out in enumerate(channels):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(conv(c_in, c_out, 3, stride=stride, padding=1), norm(c_out), nn.ReLU()))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        with torch.no_grad():
            flat = self._features(torch.zeros(1, *in_shape)).numel()
        self.head = nn.Linear(flat, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._features(x))


class _MLPTeacher(nn.Module):
    def __init__(self, in_features: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Sequential(nn.Linear(in_features, width), nn.ReLU()), nn.Sequential(nn.Linear(width, width), nn.ReLU())]
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


# name -> (architecture description, default epochs, training recipe)
_BUILTIN: dict[str, tuple[dict[str, Any], int, dict[str, Any]]] = {
    "digits": ({"kind": "cnn2d", "channels": [32, 64, 64]}, 30, {"lr": 2e-3, "batch_size": 64}),
    "mnist1d": ({"kind": "cnn1d", "channels": [64, 128, 128]}, 50, {"lr": 1e-2, "batch_size": 100}),
    # the teacher reads the full mnist1d signal: the same teacher (and cache entry) as mnist1d's
    "mnist1d_crossmodal": ({"kind": "cnn1d", "channels": [64, 128, 128]}, 50, {"lr": 1e-2, "batch_size": 100}),
    "shapes32": ({"kind": "cnn2d", "channels": [32, 64, 64]}, 10, {"lr": 2e-3, "batch_size": 64}),
    "synthetic": ({"kind": "mlp", "width": 128}, 30, {"lr": 2e-3, "batch_size": 64}),
}


def _builtin_model(arch: dict[str, Any], data: Data) -> nn.Module:
    shape = data.input_shape
    if arch["kind"] == "mlp" or len(shape) not in (2, 3):
        return _MLPTeacher(int(torch.tensor(shape).prod()), arch.get("width", 128), data.num_classes)
    return _ConvTeacher(len(shape) - 1, arch["channels"], shape, data.num_classes)


def load_teacher(cfg: TeacherConfig, data: Data, *, dataset_key: str) -> Teacher:
    """The study's teacher, in eval mode.

    Args:
        cfg: ``[teacher]``.
        data: what the teacher reads (``Data.teacher_view()``): a built-in teacher trains on its
            ``x_train``.
        dataset_key: the built-in dataset name (picks the built-in teacher's architecture).

    Raises:
        NaskdError: an unreadable, unsafe or mismatched checkpoint or TorchScript file.
    """
    rebuild: Callable[[], nn.Module] | None = None
    if cfg.torchscript is not None:
        model, source, fingerprint = _load_torchscript(cfg.torchscript)
    else:
        if cfg.model is not None:
            model, source = _load_user(cfg.model, cfg.checkpoint), f"{cfg.model} + {cfg.checkpoint}"
            rebuild = _factory(cfg.model)
        else:
            model, source = _builtin(cfg, data, dataset_key), f"built-in ({dataset_key})"
            arch = _BUILTIN.get(dataset_key, _BUILTIN["synthetic"])[0]
            rebuild = lambda: _builtin_model(arch, data)  # noqa: E731
        fingerprint = state_fingerprint(model)
    model.eval()
    return Teacher(
        model=model, source=source, fingerprint=fingerprint, name=cfg.name, weight=cfg.weight, rebuild=rebuild
    )


def load_teachers(cfgs: Sequence[TeacherConfig], data: Data, *, dataset_key: str) -> list[Teacher]:
    """Every teacher of the study (``[teacher]`` or ``[[teachers]]``), in order."""
    return [load_teacher(cfg, data, dataset_key=dataset_key) for cfg in cfgs]


def describe_teacher(teacher: Teacher, val_logits: torch.Tensor, data: Data, cost: CostConfig) -> dict[str, Any]:
    """The teacher's accuracy (from its cached validation outputs) and its measured cost."""
    if val_logits.ndim != 2 or val_logits.shape[1] < data.num_classes:  # (its outputs on the scored inputs)
        raise NaskdError(
            f"teacher {teacher.source}: outputs have shape {tuple(val_logits.shape)}, expected (N, {data.num_classes})"
        )
    measured = measure_cost(
        teacher.model,
        data.input_shape,
        batch_size=cost.batch_size,
        threads=cost.threads,
        warmup=cost.warmup,
        repeats=cost.repeats,
        device=cost.device,
    )
    info = {
        "source": teacher.source,
        "fingerprint": teacher.fingerprint,
        # No real validation data (dataset "none"): the teacher's accuracy is unknown.
        "accuracy": score(val_logits, data.y_val)["accuracy"] if data.real_validation else None,
        **measured.metrics(),
    }
    log.info(
        "teacher %s: accuracy %s, %d params, %d FLOPs",
        teacher.source,
        "unavailable" if info["accuracy"] is None else f"{info['accuracy']:.4f}",
        info["params"],
        info["flops"],
    )
    return info


def _builtin(cfg: TeacherConfig, data: Data, dataset_key: str) -> nn.Module:
    arch, default_epochs, settings = _BUILTIN.get(dataset_key, _BUILTIN["synthetic"])
    epochs = cfg.epochs or default_epochs
    recipe = DistillConfig(epochs=epochs, seed=cfg.seed, alpha=0.0, **settings)
    key_src = json.dumps(
        {
            "v": BUILTIN_VERSION,
            "data": data.fingerprint,
            "arch": arch,
            "epochs": epochs,
            "seed": cfg.seed,
            "train": settings,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    path = cache_root(cfg.cache_dir) / "teachers" / f"{key}.pt"
    torch.manual_seed(cfg.seed)
    model = _builtin_model(arch, data)
    if path.is_file():
        state = load_entry(path, key_src, "built-in teacher cache", action="retraining the teacher")
        if state is not None:
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                log.warning(
                    "built-in teacher cache %s: does not fit the model (%s); retraining the teacher",
                    path,
                    str(exc).splitlines()[0],
                )
            else:
                log.info("built-in teacher loaded from cache %s", path)
                return model
        torch.manual_seed(cfg.seed)  # the same initial weights as a first run, so the same teacher
        model = _builtin_model(arch, data)
    log.info("training the built-in %s teacher (%d epochs); cached afterwards at %s", arch["kind"], epochs, path)
    train(Scratch(model), data.x_train, data.y_train, recipe)
    save_entry(path, key_src, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    try:
        atomic_write_bytes(path.with_suffix(".json"), key_src.encode())  # what the key stands for, for people
    except OSError as exc:
        log.warning("cache file %s could not be written (%s)", path.with_suffix(".json"), exc)
    return model


def _raised(ref: str, exc: BaseException) -> NaskdError:
    """``[teacher].model: REF raised TYPE: first line``; the traceback goes to the debug log."""
    log.debug("[teacher].model: %s raised", ref, exc_info=exc)
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return NaskdError(f"[teacher].model: {ref} raised {type(exc).__name__}" + (f": {first}" if first else ""))


def _factory(ref: str) -> Callable[[], nn.Module]:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NaskdError(f"[teacher].model: cannot import {ref!r} ({exc})") from None
    except Exception as exc:  # noqa: BLE001  (user code ran at import and failed)
        raise _raised(ref, exc) from None
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise NaskdError(f"[teacher].model: cannot import {ref!r} ({exc})") from None


def _load_user(ref: str, checkpoint: Path | None) -> nn.Module:
    factory = _factory(ref)
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001  (user code)
        raise _raised(ref, exc) from None
    if not isinstance(model, nn.Module):
        raise NaskdError(f"[teacher].model: {ref} returned {type(model).__name__}, expected a torch.nn.Module")
    assert checkpoint is not None
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises many kinds for a bad file)
        log.debug("torch.load(%s) failed", checkpoint, exc_info=True)
        if is_code_refusal(exc, checkpoint):
            # torch's own message is long, multi-line and ANSI-coloured; this one says what to do.
            raise NaskdError(
                f"{checkpoint}: refused: the checkpoint holds more than tensors and would run code when loaded "
                "(torch.load weights_only=True); save model.state_dict() instead"
            ) from None
        # Random bytes, a truncated or empty file, another format: nothing torch can parse.
        raise NaskdError(
            f"{checkpoint}: not a readable torch checkpoint ({load_error_reason(exc, checkpoint)})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise NaskdError(f"{checkpoint}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0]
        raise NaskdError(f"{checkpoint}: does not match the model built by {ref} ({reason})") from None
    return model


def _load_torchscript(path: Path) -> tuple[nn.Module, str, str]:
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001  (torch raises many kinds for a bad file)
        log.debug("torch.jit.load(%s) failed", path, exc_info=True)
        reason = load_error_reason(exc, path)
        if isinstance(exc, OSError) or "failed reading zip archive" in str(exc) or reason == "the file is empty":
            # Not even an archive: random bytes, a truncated or empty file.
            raise NaskdError(f"{path}: not a readable TorchScript file ({reason})") from None
        # A readable archive that is not TorchScript (e.g. a torch.save checkpoint).
        raise NaskdError(f"{path}: not a TorchScript file ({reason})") from None
    return model, f"torchscript {path}", hashlib.sha256(path.read_bytes()).hexdigest()[:16]
