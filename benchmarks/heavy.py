"""An objective module written the way most training scripts are: torch and scikit-learn imported
at the top, the dataset built once per process at import, then a plain training loop.

Data: a 12 000 x 40 synthetic classification set (3 classes, 20 informative features, fixed
``random_state``), standardized, 80/20 train/validation split, as tensors. The objective trains
an MLP (search space ``workloads.TRAIN_SPACE``) and reports validation accuracy after each
epoch (maximize); an epoch takes 0.1 to 0.5 s on one core.
"""

from __future__ import annotations

import benchlog
import torch
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn import functional as F


def _load() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = make_classification(n_samples=12_000, n_features=40, n_informative=20, n_redundant=10,
                               n_classes=3, class_sep=0.8, flip_y=0.02, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    scaler = StandardScaler().fit(x_train)
    as_x = lambda a: torch.tensor(scaler.transform(a), dtype=torch.float32)  # noqa: E731
    return as_x(x_train), torch.tensor(y_train), as_x(x_val), torch.tensor(y_val)


X_TRAIN, Y_TRAIN, X_VAL, Y_VAL = _load()
N_CLASSES = int(Y_TRAIN.max()) + 1


def _work(params: dict) -> dict[str, float]:
    """What an epoch of this trial costs, in the terms its time is a sum of: optimizer steps,
    multiply-adds (a training row's forward and backward pass about 3x a forward's, plus the
    validation rows' forward) and parameters updated (each optimizer step touches every one;
    AdamW's update costs more per parameter than SGD's, so each optimizer has its own term)."""
    hidden, depth = int(params["hidden"]), int(params["layers"])
    widths = [X_TRAIN.shape[1]] + [hidden] * depth + [N_CLASSES]
    weights = sum(a * b for a, b in zip(widths, widths[1:]))
    batches = -(-len(X_TRAIN) // int(params["batch_size"]))
    return {"batches": batches, "macs": (3 * len(X_TRAIN) + len(X_VAL)) * weights,
            f"{params['optimizer']}_updates": batches * (weights + sum(widths[1:]))}


def objective(params: dict, reporter, epochs: int = 8) -> float:
    reporter = benchlog.timed(reporter, **_work(params))
    torch.manual_seed(reporter.seed)
    layers: list[nn.Module] = []
    width = X_TRAIN.shape[1]
    for _ in range(int(params["layers"])):
        layers += [nn.Linear(width, int(params["hidden"])), nn.ReLU(), nn.Dropout(float(params["dropout"]))]
        width = int(params["hidden"])
    model = nn.Sequential(*layers, nn.Linear(width, N_CLASSES))
    if params["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=params.get("momentum", 0.0))
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"])
    batch_size = int(params["batch_size"])
    accuracy = 0.0
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(X_TRAIN)).split(batch_size):
            optimizer.zero_grad()
            F.cross_entropy(model(X_TRAIN[idx]), Y_TRAIN[idx]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(X_VAL).argmax(dim=1) == Y_VAL).float().mean().item()
        reporter.report(epoch, accuracy)
    return accuracy
