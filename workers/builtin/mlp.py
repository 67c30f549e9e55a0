"""``builtin:mlp``: a torch MLP classifier on scikit-learn's bundled digits data (no download).

Reports validation accuracy after every epoch (the pruner's fidelity) and returns the final one.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from workers.reporter import Reporter


@lru_cache(maxsize=4)
def load_digits_split(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardized 80/20 stratified split of the 1797 8x8 digit images (fixed by ``seed``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x.astype(np.float32), y, test_size=0.2, stratify=y, random_state=seed
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    as_x = lambda a: torch.from_numpy((a - mean) / std)  # noqa: E731
    as_y = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return as_x(x_train), as_y(y_train), as_x(x_val), as_y(y_val)


def build_mlp(n_in: int, n_out: int, hidden: int, layers: int, dropout: float) -> nn.Module:
    blocks: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    blocks.append(nn.Linear(width, n_out))
    return nn.Sequential(*blocks)


def make_optimizer(params, model: nn.Module) -> torch.optim.Optimizer:
    lr, wd = params["lr"], params.get("weight_decay", 0.0)
    if params.get("optimizer", "adamw") == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=params.get("momentum", 0.0), weight_decay=wd)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def objective(params: dict, reporter: Reporter, epochs: int = 10) -> float:
    torch.manual_seed(reporter.seed)
    device = torch.device(reporter.device)
    x_train, y_train, x_val, y_val = (t.to(device) for t in load_digits_split())
    model = build_mlp(
        x_train.shape[1], 10, int(params.get("hidden", 64)), int(params.get("layers", 1)),
        float(params.get("dropout", 0.0)),
    ).to(device)
    optimizer = make_optimizer(params, model)
    loss_fn = nn.CrossEntropyLoss()
    batch_size = int(params.get("batch_size", 64))
    generator = torch.Generator().manual_seed(reporter.seed)
    val_acc = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
        val_acc = accuracy(model, x_val, y_val)
        reporter.log(train_accuracy=accuracy(model, x_train, y_train), train_loss=loss.item())
        reporter.report(epoch, val_acc)
    return val_acc
