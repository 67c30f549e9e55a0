"""``builtin:mlp``: a torch MLP classifier on tabular data (search space ``mlp``).

Data (no download): scikit-learn's bundled ``digits`` (default), ``breast_cancer`` or ``wine``,
or a user's CSV/Parquet file given as ``dataset: path/to/file.csv`` with ``target: <column>``
(classification only; see :mod:`workers.builtin.tabular` for how columns are encoded).

Reports validation accuracy after every epoch (the pruner's fidelity), logs the training
accuracy and loss (so the train/validation gap is visible), and returns the final validation
accuracy. Parameters: ``hidden``, ``layers``, ``dropout``, ``batch_norm`` and those of
:mod:`workers.builtin.common` (lr, optimizer, momentum, weight_decay, schedule, warmup,
label_smoothing, batch_size).
"""

from __future__ import annotations

import torch
from torch import nn

from workers.builtin.common import bool_param, chunks, fit, float_param, int_param, tensor_batches
from workers.builtin.tabular import BUNDLED, Split, load_split, load_table, resolve_path
from workers.reporter import Reporter


def build_mlp(
    n_in: int, n_out: int, hidden: int, layers: int, dropout: float, batch_norm: bool = False
) -> nn.Module:
    """``layers`` blocks of Linear -> [BatchNorm] -> ReLU -> Dropout, then a linear classifier."""
    blocks: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        blocks.append(nn.Linear(width, hidden, bias=not batch_norm))
        if batch_norm:
            blocks.append(nn.BatchNorm1d(hidden))
        blocks += [nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    blocks.append(nn.Linear(width, n_out))
    return nn.Sequential(*blocks)


def load_digits_split(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardized 80/20 stratified split of the 1797 8x8 digit images (fixed by ``seed``)."""
    return _tensors(load_split("digits", split_seed=seed))


def _tensors(split: Split) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(split.x_train), torch.from_numpy(split.y_train),
        torch.from_numpy(split.x_val), torch.from_numpy(split.y_val),
    )


def check_args(objective_args: dict, base_dir: str | None = None) -> dict:
    """Validate ``dataset``/``target`` of a spec's objective_args before any trial runs.

    Raises the same one-line ValueError a trial would (unknown dataset, missing file or target
    column, ...). ``base_dir`` is the spec file's folder, which relative paths are resolved
    against. hpo calls this in the driver process (so bad data is refused before anything is
    written) and stores the returned args, with a dataset path made absolute, in the study.
    """
    dataset = objective_args.get("dataset", "digits")
    load_table(dataset, objective_args.get("target"), base_dir)
    if str(dataset) not in BUNDLED:
        objective_args = {**objective_args, "dataset": str(resolve_path(str(dataset), base_dir))}
    return objective_args


def objective(
    params: dict,
    reporter: Reporter,
    epochs: int = 10,
    dataset: str = "digits",
    target: str | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
) -> float:
    split = load_split(dataset, target, val_fraction, split_seed)
    torch.manual_seed(reporter.seed)
    device = torch.device(reporter.device)
    x_train, y_train, x_val, y_val = (t.to(device) for t in _tensors(split))
    model = build_mlp(
        x_train.shape[1],
        split.n_classes,
        int_param(params, "hidden", 64),
        int_param(params, "layers", 1),
        float_param(params, "dropout", 0.0),
        bool_param(params, "batch_norm"),
    ).to(device)
    batches, steps = tensor_batches(x_train, y_train, int_param(params, "batch_size", 64))
    return fit(
        model, params, reporter,
        epochs=epochs, train_batches=batches, steps_per_epoch=steps,
        train_eval=chunks(x_train, y_train), val_eval=chunks(x_val, y_val),
    )
