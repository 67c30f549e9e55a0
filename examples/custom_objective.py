"""An MLP on scikit-learn's digits in plain PyTorch (no download).

examples/plain_train.py is an ordinary training script with hard-coded hyperparameters;
examples/custom_objective.py is the same script turned into an hpo objective. The diff between
the two is the whole integration (docs/objective-contract.md walks through it):

    diff -u examples/plain_train.py examples/custom_objective.py
"""

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from workers import Reporter


def load_data():
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return TensorDataset(x_train, y_train), TensorDataset(x_val, y_val)


def accuracy(model, dataset):
    model.eval()
    x, y = dataset.tensors
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def objective(params: dict, reporter: Reporter, epochs=10):
    torch.manual_seed(reporter.seed)
    train_set, val_set = load_data()
    loader = DataLoader(train_set, batch_size=params["batch_size"], shuffle=True)
    model = nn.Sequential(nn.Linear(64, params["hidden"]), nn.ReLU(), nn.Dropout(params["dropout"]), nn.Linear(params["hidden"], 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        val_acc = accuracy(model, val_set)
        reporter.log(train_accuracy=accuracy(model, train_set))
        reporter.report(epoch, val_acc)  # the pruner's input; raises workers.Pruned to stop early
    return val_acc


if __name__ == "__main__":
    print(objective({"lr": 1e-3, "batch_size": 64, "hidden": 128, "dropout": 0.2, "weight_decay": 1e-4}, Reporter.local()))
