"""Models for the deployment tests (shrink and int8), referenced as ``helpers_deploy:NAME`` from
``[teacher].model`` or a user space's ``builder``. Sized for ``small_study``'s synthetic data:
inputs of shape (16,), 4 classes."""

from __future__ import annotations

import torch
from torch import nn


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.fc(x))


class ResidualMLP(nn.Module):
    """A stem, one stage of two residual blocks (droppable), and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(16, 32)
        self.stages = nn.ModuleList([nn.Sequential(_Residual(32), _Residual(32))])
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def residual() -> nn.Module:
    return ResidualMLP()


class _Detached(nn.Module):
    """Its forward leaves autograd in the middle (through NumPy), so a graph tracer sees two
    unconnected pieces: Torch-Pruning cannot keep the layers on both sides consistent."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 32)
        self.b = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = torch.as_tensor(h.detach().cpu().numpy(), device=x.device)
        return self.b(h)


def detached() -> nn.Module:
    return _Detached()


class _Branchy(nn.Module):
    """A student whose forward branches on a tensor's value: torch.export cannot capture it."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x)
        return self.fc(-x)


def branchy(arch: dict, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _Branchy(num_classes)


class _TorchvisionNamed(nn.Module):
    """Stages named as torchvision's ResNets name them: ``layer1``, ``layer2``, then ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(16, 32), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Linear(32, 32), nn.ReLU())
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer2(self.layer1(x)))


def torchvision_named() -> nn.Module:
    return _TorchvisionNamed()
