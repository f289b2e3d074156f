"""Regression: mlx-lm 0.32's default_loss trains one padding target after every sample."""

from __future__ import annotations

import subprocess
import sys

CODE = r"""
import mlx.core as mx, mlx.nn as nn
from mlx_lm.tuner.trainer import default_loss
from daemon.worker.mlxutil import masked_loss

class Probe(nn.Module):
    # Logits that make the padding id 0 certain and every real id impossible:
    # any loss that counts a padding target comes out near 0 for it.
    def __call__(self, x):
        return mx.where(mx.arange(8)[None, None, :] == 0, 50.0, -50.0) * mx.ones((*x.shape, 8))

batch = mx.array([[3, 4, 5, 0, 0, 0]])          # 3 real tokens, then padding
lengths = mx.array([[0, 3]])                    # offset 0, length 3
ours, n_ours = masked_loss(Probe(), batch, lengths)
theirs, n_theirs = default_loss(Probe(), batch, lengths)
print(int(n_ours.item()), int(n_theirs.item()), round(float(ours.item()), 1), round(float(theirs.item()), 1))
"""


def test_masked_loss_counts_only_real_targets() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout.split()
    n_ours, n_theirs, ours, theirs = int(out[0]), int(out[1]), float(out[2]), float(out[3])
    assert n_ours == 2  # targets: tokens 4 and 5
    assert n_theirs == 3  # mlx-lm also counts the padding target after token 5
    assert ours == 100.0  # both real targets are "impossible": 100 nats each
    assert theirs < ours  # the padding target (certain) dilutes mlx-lm's loss
