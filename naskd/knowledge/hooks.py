"""Capturing what a model computes inside, without editing the model: forward hooks on named
modules (features), on the classifier's input (embeddings) and on attention layers
(attention probabilities), plus the automatic teacher-to-student pairing for built-in models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_STAGE = re.compile(r"^(stages|layers)\.(\d+)$")


def module_names(model: nn.Module) -> list[str]:
    """Every named submodule (what a ``[[distill.pairs]]`` entry may name)."""
    return [name for name, _ in model.named_modules() if name]


def stage_names(model: nn.Module) -> list[str]:
    """The model's stages in order: ``stages.i`` (conv) or ``layers.i`` (mlp, transformer)."""
    found = [(m.group(1), int(m.group(2)), name) for name in module_names(model) if (m := _STAGE.match(name))]
    return [name for _, _, name in sorted(found, key=lambda t: (t[0], t[1]))]


def attention_layer_names(model: nn.Module) -> list[str]:
    """Encoder layers and bare attention modules whose attention probabilities can be captured."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            names.append(name)
        elif isinstance(module, nn.MultiheadAttention) and not name.endswith("self_attn"):
            names.append(name)
    return names


def relative_pairs(teacher_names: Sequence[str], student_names: Sequence[str]) -> list[tuple[str, str]]:
    """Teacher stage i to the student stage at the same relative depth ((i + 1) / T of the way)."""
    if not teacher_names or not student_names:
        return []
    t, s = len(teacher_names), len(student_names)
    return [(name, student_names[max(0, math.ceil((i + 1) * s / t) - 1)]) for i, name in enumerate(teacher_names)]


def embedding_module(model: nn.Module) -> nn.Module | None:
    """The classifier whose input is the penultimate embedding: ``head`` when the model has one,
    else its last Linear layer."""
    head = dict(model.named_modules()).get("head")
    if isinstance(head, nn.Module):
        return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def attention_probs(mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) per head, (B, heads, Lq, Lk), recomputed from the module's own
    projections: PyTorch's fused attention paths do not return the probabilities."""
    if not mha.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    heads, dim = mha.num_heads, mha.embed_dim // mha.num_heads
    w_q, w_k, _ = mha.in_proj_weight.chunk(3)
    b_q, b_k = mha.in_proj_bias.chunk(3)[:2] if mha.in_proj_bias is not None else (None, None)
    q = F.linear(query, w_q, b_q).unflatten(-1, (heads, dim)).transpose(1, 2)
    k = F.linear(key, w_k, b_k).unflatten(-1, (heads, dim)).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim), dim=-1)


class Tap:
    """Records, on every forward pass, the outputs of named modules, the embedding (the input of
    ``embedding_module``) and attention probabilities of named attention layers.

    Use as a context manager; hooks are removed on exit. ``values`` maps each feature name,
    ``"embedding"`` and ``"attention:<name>"`` to the tensor of the latest forward pass.
    """

    def __init__(
        self, model: nn.Module, features: Sequence[str] = (), *, embedding: bool = False, attention: Sequence[str] = ()
    ) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        modules = dict(model.named_modules())
        for name in dict.fromkeys(features):
            self._handles.append(modules[name].register_forward_hook(self._keep_output(name)))
        if embedding:
            target = embedding_module(model)
            if target is None:
                raise ValueError("the model has no 'head' and no Linear layer: no embedding to capture")
            self._handles.append(target.register_forward_pre_hook(self._keep_input("embedding")))
        for name in dict.fromkeys(attention):
            module = modules[name]
            self._handles.append(module.register_forward_pre_hook(self._keep_attention(name, module), with_kwargs=True))

    def _keep_output(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.values[name] = output[0] if isinstance(output, tuple) else output

        return hook

    def _keep_input(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            self.values[name] = args[0]

        return hook

    def _keep_attention(self, name: str, module: nn.Module) -> Any:
        def hook(mod: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
            # The layer's input: positional, or by name (src for an encoder layer, query for attention).
            x: torch.Tensor = args[0] if args else kwargs["src"] if "src" in kwargs else kwargs["query"]
            if isinstance(module, nn.TransformerEncoderLayer):
                h = module.norm1(x) if module.norm_first else x
                self.values[f"attention:{name}"] = attention_probs(module.self_attn, h, h)
            else:
                key: torch.Tensor = args[1] if len(args) > 1 else kwargs.get("key", x)
                assert isinstance(module, nn.MultiheadAttention)  # the only other kind hooked here
                self.values[f"attention:{name}"] = attention_probs(module, x, key)

        return hook

    def __enter__(self) -> Tap:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
