"""``builtin:cnn``: a small convolutional network on scikit-learn's 8x8 digit images (no download).

The 1797 images are split 80/20 (stratified, fixed by ``split_seed``). Training batches are
augmented on the fly with random affine transforms whose size grows with ``augment`` in [0, 1]:
rotation up to 15 degrees, shift up to 1 pixel, zoom up to 10 % at ``augment: 1``, plus random
erasing of a 3x3 patch with probability ``augment / 2``. Validation images are never augmented.

Network: ``layers`` blocks of [3x3 conv -> (batch norm) -> ReLU] x 2, where the first two blocks
halve the resolution with max pooling (8 -> 4 -> 2) and each block doubles the channels, starting
at ``width``; then dropout and a linear classifier on the flattened feature map (it keeps where a
stroke is, which global average pooling would lose on images this small).

Reports validation accuracy every epoch, logs training accuracy/loss, returns the final
validation accuracy. Parameters: ``width``, ``layers``, ``dropout``, ``batch_norm``, ``augment``
and those of :mod:`workers.builtin.common`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from workers.builtin.common import bool_param, chunks, fit, float_param, int_param, tensor_batches
from workers.reporter import Reporter


@lru_cache(maxsize=4)
def load_digit_images(
    val_fraction: float = 0.2, split_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_val, y_val); images as N x 1 x 8 x 8, normalized by training statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y.astype(np.int64), test_size=val_fraction, stratify=y, random_state=split_seed
    )
    mean, std = float(x_train.mean()), float(x_train.std())
    norm = lambda a: torch.from_numpy((a - mean) / std)  # noqa: E731
    return norm(x_train), torch.from_numpy(y_train), norm(x_val), torch.from_numpy(y_val)


def augmenter(strength: float):
    """A batch transform: random rotation/shift/zoom and erasing, scaled by ``strength``."""
    if strength <= 0:
        return None

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        u = lambda *shape: (torch.rand(*shape, generator=generator) * 2 - 1)  # noqa: E731  uniform(-1, 1)
        angle = u(n) * math.radians(15.0) * strength
        scale = 1.0 + u(n) * 0.1 * strength
        shift = u(n, 2) * (2.0 / 8.0) * strength  # 1 pixel in the [-1, 1] grid coordinates of 8 pixels
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
        ).to(x.device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Pad with the normalized background (the image minimum), not with zero.
        background = x.amin(dim=(1, 2, 3), keepdim=True)
        out = F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background
        # Random erasing: a 3x3 patch set to the background, for a fraction of the images.
        erase = (torch.rand(n, generator=generator) < strength / 2).to(x.device)
        if erase.any():
            top = torch.randint(0, 6, (n,), generator=generator).to(x.device)
            left = torch.randint(0, 6, (n,), generator=generator).to(x.device)
            rows = torch.arange(8, device=x.device)
            in_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + 3)
            in_cols = (rows[None, :] >= left[:, None]) & (rows[None, :] < left[:, None] + 3)
            patch = (in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None])[:, None]
            out = torch.where(patch, background.expand_as(out), out)
        return out

    return augment


class SmallCNN(nn.Module):
    def __init__(self, width: int, layers: int, dropout: float, batch_norm: bool, n_classes: int = 10) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels_in, channels = 1, width
        for i in range(layers):
            for j in range(2):
                blocks.append(nn.Conv2d(channels_in if j == 0 else channels, channels, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    blocks.append(nn.BatchNorm2d(channels))
                blocks.append(nn.ReLU())
            if i < 2:
                blocks.append(nn.MaxPool2d(2))
            channels_in, channels = channels, channels * 2
        self.features = nn.Sequential(*blocks)
        side = 8 // 2 ** min(layers, 2)  # 4x4 after one pooling, 2x2 after two
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels_in * side * side, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def objective(
    params: dict,
    reporter: Reporter,
    epochs: int = 10,
    val_fraction: float = 0.2,
    split_seed: int = 0,
) -> float:
    torch.manual_seed(reporter.seed)
    device = torch.device(reporter.device)
    x_train, y_train, x_val, y_val = (t.to(device) for t in load_digit_images(float(val_fraction), int(split_seed)))
    model = SmallCNN(
        int_param(params, "width", 16),
        int_param(params, "layers", 2),
        float_param(params, "dropout", 0.0),
        bool_param(params, "batch_norm"),
    ).to(device)
    batches, steps = tensor_batches(
        x_train, y_train, int_param(params, "batch_size", 64), augmenter(float_param(params, "augment", 0.0))
    )
    return fit(
        model, params, reporter,
        epochs=epochs, train_batches=batches, steps_per_epoch=steps,
        train_eval=chunks(x_train, y_train), val_eval=chunks(x_val, y_val),
    )
