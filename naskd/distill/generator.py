"""The generator of data-free adversarial distillation (``naskd.distill.adversarial``): it maps
noise ``z`` to inputs of the study's shape, on which the teacher and the student are then
compared. This module owns only the network; the adversarial game, its optimizer and its
noise stream belong to the distiller.

The shape decides the stack, after DCGAN and DFAD's generator: ``(C, L)`` inputs get a
Conv1d stack, ``(C, H, W)`` inputs a Conv2d stack (a linear layer to a coarse map at a quarter
of the size, then twice upsample + convolution + BatchNorm + LeakyReLU, then a convolution to
``C`` channels); any other shape an MLP to ``prod(shape)`` values. The second upsampling goes
to the exact size, so sizes not divisible by 4 (an odd length) come out exact.

The output ends in a BatchNorm over the output channels, not DFAD's tanh: tanh bounds inputs
to [-1, 1], the range of images scaled for GANs, but the project's data are not scaled that
way (MNIST-1D's training inputs have mean 0.0, std 1.0 and range about [-5.5, 4.5]). The
BatchNorm gives each output channel a batch mean of 0 and a standard deviation of 1, the scale
of standardised data, which the datasets here roughly are. By default it learns no scale or
shift (``affine=False``, as DFAD's own final BatchNorm): the generator maximises the gap
between teacher and student logits, which grows with the inputs' scale, so a learnt scale only
ever grows (measured on MNIST-1D: from 1.0 to 1.3 in 600 generator steps, 3.2 in 3000, inputs
past +-20) and the student learns on inputs ever further from any real data; with it fixed
the student reached 41-47% validation accuracy after 3000 steps where the learnt scale gave
30-34% (three seeds each).
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: the LeakyReLU slope of DCGAN's and DFAD's generators
SLOPE = 0.2


class Generator(nn.Module):
    """Args: ``latent_dim`` (the noise's width), ``input_shape`` (one sample's shape, without
    the batch), ``width`` (the last hidden stage's channels; the coarse map has twice as many,
    the MLP's hidden layers four times as many) and ``affine`` (whether the output BatchNorm
    learns a scale and shift; see above why not by default). Weights are drawn from the
    global RNG at construction, so they are deterministic given its seed.

    ``forward(z)``: ``(B, latent_dim)`` noise -> ``(B, *input_shape)`` inputs. In training
    mode its BatchNorms need ``B >= 2``.
    """

    def __init__(
        self, latent_dim: int, input_shape: tuple[int, ...] | torch.Size, width: int = 64, affine: bool = False
    ) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.input_shape = tuple(int(s) for s in input_shape)
        if not self.input_shape or any(s < 1 for s in self.input_shape):
            raise ValueError(f"a generator needs a non-empty input shape of positive sizes, got {self.input_shape}")
        dims = len(self.input_shape) - 1
        if dims in (1, 2):
            channels, size = self.input_shape[0], self.input_shape[1:]
            conv = nn.Conv1d if dims == 1 else nn.Conv2d
            norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
            self.coarse = tuple(max(1, math.ceil(s / 4)) for s in size)
            self.project = nn.Linear(self.latent_dim, 2 * width * math.prod(self.coarse))
            self.body = nn.Sequential(
                norm(2 * width),
                nn.Upsample(scale_factor=2, mode="nearest"),
                conv(2 * width, 2 * width, 3, padding=1),
                norm(2 * width),
                nn.LeakyReLU(SLOPE),
                nn.Upsample(size=size, mode="nearest"),  # the exact size, whatever it is modulo 4
                conv(2 * width, width, 3, padding=1),
                norm(width),
                nn.LeakyReLU(SLOPE),
                conv(width, channels, 3, padding=1),
                norm(channels, affine=affine),
            )
            self.channels = 2 * width
        else:
            hidden = 4 * width
            flat = math.prod(self.input_shape)
            self.coarse = ()
            self.project = nn.Linear(self.latent_dim, hidden)
            self.body = nn.Sequential(
                nn.BatchNorm1d(hidden),
                nn.LeakyReLU(SLOPE),
                nn.Linear(hidden, hidden),
                nn.BatchNorm1d(hidden),
                nn.LeakyReLU(SLOPE),
                nn.Linear(hidden, flat),
                nn.BatchNorm1d(flat, affine=affine),  # each value is an output channel
            )
            self.channels = hidden

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z)
        if self.coarse:
            h = h.view(z.shape[0], self.channels, *self.coarse)
        return self.body(h).reshape(z.shape[0], *self.input_shape)
