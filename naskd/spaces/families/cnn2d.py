"""The ``cnn2d`` family: 2-D convolutional students for images shaped ``(C, H, W)``.

Arch keys and defaults (the same keys as ``cnn1d``):

===========  ========  =====================================================================
key          default   meaning
===========  ========  =====================================================================
stages       3         stages of conv blocks (>= 1)
blocks       1         blocks per stage; an int, or a list with one entry per stage
width        16        channels of stage 0
width_mult   2.0       channel multiplier from one stage to the next, in [0.25, 8]
kernel       3         kernel size (odd), square
stride       2         stride of the first block of every stage after stage 0: 1 or 2
residual     true      add a shortcut (identity, or 1x1 projection when the shape changes)
activation   "relu"    relu | gelu | silu | tanh
batchnorm    true      batch normalisation after each convolution
===========  ========  =====================================================================

Stage ``s`` has ``round(width * width_mult ** s)`` channels. Each block is two same-padded
convolutions. Module names: ``stages.0`` .. ``stages.{stages-1}``, then global average pool and
``head`` (Linear). On 8x8 digits, stride 2 allows at most 4 stages (8 -> 4 -> 2 -> 1).
"""

from __future__ import annotations

from naskd.spaces.families._conv import ConvFamily

CNN2D = ConvFamily("cnn2d", dims=2)
