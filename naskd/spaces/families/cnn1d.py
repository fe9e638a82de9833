"""The ``cnn1d`` family: 1-D convolutional students for sequences shaped ``(C, L)``.

Arch keys and defaults:

===========  ========  =====================================================================
key          default   meaning
===========  ========  =====================================================================
stages       3         stages of conv blocks (>= 1)
blocks       1         blocks per stage; an int, or a list with one entry per stage
width        16        channels of stage 0
width_mult   2.0       channel multiplier from one stage to the next, in [0.25, 8]
kernel       3         kernel size (odd)
stride       2         stride of the first block of every stage after stage 0: 1 or 2
residual     true      add a shortcut (identity, or 1x1 projection when the shape changes)
activation   "relu"    relu | gelu | silu | tanh
batchnorm    true      batch normalisation after each convolution
===========  ========  =====================================================================

Stage ``s`` has ``round(width * width_mult ** s)`` channels. Each block is two same-padded
convolutions. Module names: ``stages.0`` .. ``stages.{stages-1}``, then global average pool and
``head`` (Linear). A same-padded stride-2 block maps length n to ceil(n / 2), and each
downsampling stage must still see a length of at least 2: ``check`` rejects e.g. 4 stages on
length 4 (4 -> 2 -> 1, then nothing left to halve). Length 40 (mnist1d) allows up to 7 stages.
"""

from __future__ import annotations

from naskd.spaces.families._conv import ConvFamily

CNN1D = ConvFamily("cnn1d", dims=1)
