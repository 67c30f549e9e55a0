"""The builtin workloads: they learn on a tiny budget, are deterministic, agree with their search
spaces, and turn bad user data into one clear error."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from hpo.spec.space import SearchSpace, builtin_spaces_dir, resolve_space_source
from workers import Pruned, Reporter
from workers.builtin import cnn, common, gnn, mlp, tabular, transformer
from workers.runner import BUILTINS, resolve_objective

from conftest import REPO

CHURN = REPO / "examples" / "data" / "churn.csv"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and do not fight other processes for cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train(objective, params, seed=0, **args):
    """Run an objective; returns (returned value, [(step, value)] reported, logged metrics)."""
    reports: list[tuple[int, float]] = []
    reporter = Reporter(seed=seed, send=lambda step, value: reports.append((step, value)) or False)
    value = objective(dict(params), reporter, **args)
    return value, reports, reporter.metrics


# (id, objective, a reasonable fixed parameter set, objective args for a tiny budget)
WORKLOADS = [
    ("mlp-digits", mlp.objective, dict(lr=1e-3, hidden=32, layers=1, batch_size=64), dict(epochs=4)),
    (
        "mlp-breast_cancer", mlp.objective,
        dict(lr=1e-3, optimizer="sgd", momentum=0.9, hidden=16, layers=1, batch_size=64),
        dict(epochs=4, dataset="breast_cancer"),
    ),
    (
        "mlp-wine", mlp.objective,
        dict(lr=1e-3, optimizer="sgd", momentum=0.9, hidden=16, layers=1, batch_size=32),
        dict(epochs=4, dataset="wine"),
    ),
    (
        "mlp-csv", mlp.objective, dict(lr=1e-3, hidden=32, layers=1, batch_size=64),
        dict(epochs=4, dataset=str(CHURN), target="churned"),
    ),
    (
        "cnn", cnn.objective, dict(lr=3e-3, width=8, layers=1, batch_size=64, batch_norm=True, augment=0.5),
        dict(epochs=4),
    ),
    (
        "transformer-sort", transformer.objective, dict(lr=3e-3, width=32, heads=2, layers=1, batch_size=64),
        dict(epochs=4, n_train=1000, n_val=200),
    ),
    (
        "transformer-signals", transformer.objective, dict(lr=3e-3, width=32, heads=2, layers=1, batch_size=64),
        dict(epochs=4, task="signals", n_train=1000, n_val=200),
    ),
    ("gnn", gnn.objective, dict(lr=3e-3, width=32, layers=2, batch_size=32), dict(epochs=4, n_graphs=400)),
]
IDS = [w[0] for w in WORKLOADS]


@pytest.mark.parametrize("name, objective, params, args", WORKLOADS, ids=IDS)
def test_workload_learns_on_a_tiny_budget(name, objective, params, args):
    value, reports, metrics = train(objective, params, **args)
    assert [step for step, _ in reports] == list(range(args["epochs"]))  # one report per epoch
    first, last = reports[0][1], reports[-1][1]
    assert last > first, f"{name}: validation accuracy did not improve: {reports}"
    assert value == last and 0.0 <= value <= 1.0
    # The training metric is recorded next to the validation metric, so the gap is visible.
    assert {"train_accuracy", "train_loss", "val_loss", "generalization_gap"} <= set(metrics)
    assert 0.0 <= metrics["train_accuracy"] <= 1.0 and math.isfinite(metrics["train_loss"])
    assert metrics["generalization_gap"] == pytest.approx(metrics["train_accuracy"] - value)


@pytest.mark.parametrize("name, objective, params, args", WORKLOADS, ids=IDS)
def test_same_seed_same_result(name, objective, params, args):
    args = {**args, "epochs": 2}
    _, once, metrics_once = train(objective, params, seed=3, **args)
    _, twice, metrics_twice = train(objective, params, seed=3, **args)
    assert once == twice and metrics_once == metrics_twice
    _, other, other_metrics = train(objective, params, seed=4, **args)
    assert (other, other_metrics) != (once, metrics_once), "the trial's seed should matter"


def test_mlp_keeps_its_original_call_with_the_mlp_space():
    params = dict(lr=3e-3, optimizer="adamw", weight_decay=1e-4, hidden=64, layers=2, dropout=0.1, batch_size=64)
    value, reports, _ = train(mlp.objective, params, epochs=3)
    assert len(reports) == 3 and value > 0.8  # digits by default
    x_train, y_train, x_val, y_val = mlp.load_digits_split()
    assert x_train.shape == (1437, 64) and x_val.shape == (360, 64) and int(y_train.max()) == 9


def test_pruned_propagates_out_of_the_workload():
    reports = []

    def send(step, value):
        reports.append(step)
        return step == 1  # the driver says stop after the second epoch

    with pytest.raises(Pruned):
        gnn.objective({"width": 16, "layers": 1}, Reporter(seed=0, send=send), epochs=5, n_graphs=100)
    assert reports == [0, 1]


def test_every_builtin_is_registered_and_resolvable():
    for name in ("mlp", "cnn", "transformer", "gnn"):
        assert name in BUILTINS
        assert callable(resolve_objective(f"builtin:{name}"))


class RecordingParams(dict):
    """A params dict that remembers which names the workload read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


SPACE_RUNS = {
    "mlp": (mlp.objective, dict(epochs=1)),
    "cnn": (cnn.objective, dict(epochs=1)),
    "transformer": (transformer.objective, dict(epochs=1, n_train=200, n_val=50)),
    "gnn": (gnn.objective, dict(epochs=1, n_graphs=120)),
}


@pytest.mark.parametrize("space_name", sorted(SPACE_RUNS))
def test_workload_reads_every_parameter_of_its_space(space_name):
    """Every parameter of the shipped space reaches the workload (no silently ignored names)."""
    data, _ = resolve_space_source(space_name, builtin_spaces_dir())
    space = SearchSpace.model_validate(data)
    objective, args = SPACE_RUNS[space_name]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen: set[str] = set()
    for number in range(4):
        params = RecordingParams(space.sample(study.ask()))
        value = objective(params, Reporter.local(seed=number), **args)
        assert 0.0 <= value <= 1.0
        assert set(params) <= params.read, f"{space_name}: unused {set(params) - params.read}"
        seen |= set(params)
    assert {"lr", "optimizer", "weight_decay", "dropout", "batch_size", "schedule", "label_smoothing"} <= seen


def test_mlp_space_keeps_its_core_names_first():
    data, _ = resolve_space_source("mlp", builtin_spaces_dir())
    names = list(SearchSpace.model_validate(data).params)
    assert names[:8] == ["lr", "optimizer", "momentum", "weight_decay", "hidden", "layers", "dropout", "batch_size"]
    assert {"batch_norm", "label_smoothing", "schedule"} <= set(names)


# -- optimizer, schedule, loss -------------------------------------------------------------------


def test_schedules():
    total = 100
    assert [common.lr_factor("constant", s, total) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    cosine = [common.lr_factor("cosine", s, total) for s in range(total)]
    assert cosine[0] == 1.0 and cosine[-1] < 0.01 and all(a >= b for a, b in zip(cosine, cosine[1:]))
    assert common.lr_factor("step", 49, total) == 1.0
    assert common.lr_factor("step", 50, total) == pytest.approx(0.1)
    assert common.lr_factor("step", 75, total) == pytest.approx(0.01)
    warm = [common.lr_factor("cosine", s, total, warmup_steps=10) for s in range(12)]
    assert warm[0] == pytest.approx(0.1) and warm[9] == 1.0 and warm[11] < 1.0


def test_scheduler_steps_the_learning_rate():
    model = torch.nn.Linear(2, 2)
    optimizer = common.make_optimizer({"lr": 0.1, "optimizer": "sgd", "momentum": 0.9}, model)
    scheduler = common.make_scheduler({"schedule": "step"}, optimizer, total_steps=4)
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_optimizer_choices_and_weight_decay_groups():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    sgd = common.make_optimizer({"optimizer": "sgd", "lr": 0.1, "momentum": 0.8, "weight_decay": 0.01}, model)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    decayed, plain = sgd.param_groups
    assert decayed["weight_decay"] == 0.01 and [p.ndim for p in decayed["params"]] == [2]
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3  # bias, norm weight, norm bias
    assert isinstance(common.make_optimizer({}, model), torch.optim.AdamW)
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; expected one of adamw, sgd"):
        common.make_optimizer({"optimizer": "adam"}, model)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        common.make_scheduler({"schedule": "linear"}, sgd, 10)
    assert common.make_loss({"label_smoothing": 0.1}).label_smoothing == 0.1


# -- workload details ----------------------------------------------------------------------------


def test_cnn_augmentation_is_seeded_and_keeps_shape():
    x = cnn.load_digit_images()[0][:16]
    assert cnn.augmenter(0.0) is None
    augment = cnn.augmenter(1.0)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert a.min() >= x.min() - 1e-5 and a.max() <= x.max() + 1e-5  # interpolation stays in range
    mild = cnn.augmenter(0.1)(x, torch.Generator().manual_seed(0))
    assert (mild - x).abs().mean() < (a - x).abs().mean()


def test_transformer_data_and_shape_checks():
    x, y = transformer.make_sort_data(50, 12, 20, 0)
    assert torch.equal(y, x.sort(dim=1).values)
    patches, labels = transformer.make_signal_data(40, 0)
    assert patches.shape == (40, 8, 8) and sorted(set(labels.tolist())) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"width \(30\) must be a multiple of heads \(4\)"):
        transformer.objective({"width": 30, "heads": 4}, Reporter.local(), epochs=1, n_train=20, n_val=10)
    with pytest.raises(ValueError, match="unknown task 'parity'; expected one of sort, signals"):
        transformer.objective({}, Reporter.local(), task="parity")


def test_gnn_graphs_and_batches_are_consistent():
    graphs = gnn.make_graphs(40, 12, 24, 0)
    assert graphs.y.bincount().tolist() == [10, 10, 10, 10]
    src, dst = graphs.edges
    assert torch.equal(graphs.node_graph[src], graphs.node_graph[dst])  # no edge between graphs
    ids = torch.tensor([7, 3, 21])
    batch, y = gnn.select(graphs, ids)
    assert batch.num_graphs == 3 and torch.equal(y, graphs.y[torch.tensor([3, 7, 21])])
    assert int(batch.edges.max()) < batch.x.shape[0]
    assert torch.equal(batch.node_graph[batch.edges[0]], batch.node_graph[batch.edges[1]])
    sizes = [int((graphs.node_graph == i).sum()) for i in (3, 7, 21)]
    assert batch.node_graph.bincount().tolist() == sizes
    dropped, _ = gnn.select(graphs, ids, drop_edge=0.5, generator=torch.Generator().manual_seed(0))
    assert 0 < dropped.edges.shape[1] < batch.edges.shape[1]
    model = gnn.GNN(2, 4, width=8, layers=2, aggregation="sum")
    assert model(batch).shape == (3, 4)
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        gnn.GNN(2, 4, width=8, layers=1, aggregation="max")


# -- tabular data: bundled sets and a user's file --------------------------------------------------


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_columns_are_encoded(tmp_path):
    rows = ["size,color,score,label"]
    rng = np.random.default_rng(0)
    for i in range(40):
        color = ["red", "green", "blue"][i % 3]
        score = "" if i == 5 else f"{rng.normal():.3f}"
        rows.append(f"{i},{color},{score},{'cat' if i % 2 else 'dog'}")
    path = write_csv(tmp_path / "pets.csv", "\n".join(rows) + "\n")
    table = tabular.load_table(str(path), "label")
    assert table.classes == ("cat", "dog") and table.y[:2].tolist() == [1, 0]
    assert table.feature_names == ("size", "color=red", "color=green", "color=blue", "score")
    assert table.x.shape == (40, 5) and np.isfinite(table.x).all()
    assert table.x[:3, 1:4].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    split = tabular.load_split(str(path), "label")
    assert len(split.y_train) == 32 and len(split.y_val) == 8 and split.n_classes == 2
    assert abs(float(split.x_train.mean())) < 1e-5  # standardized with training statistics


def test_churn_example_data_is_small_and_mixed():
    assert CHURN.stat().st_size < 200_000
    table = tabular.load_table(str(CHURN), "churned")
    assert table.classes == ("no", "yes") and table.x.shape[0] == 1200
    assert any("=" in name for name in table.feature_names)  # categorical columns were one-hot encoded


def test_missing_target_column_is_one_clear_error():
    with pytest.raises(ValueError) as info:
        mlp.objective({}, Reporter.local(), epochs=1, dataset=str(CHURN), target="churn")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"target column 'churn' not found in {CHURN}")
    assert "churned" in message  # the columns that do exist are listed


@pytest.mark.parametrize(
    "args, expected",
    [
        (dict(dataset="iris"), "unknown dataset 'iris'; expected one of digits, breast_cancer, wine or a path"),
        (dict(dataset="no/such/file.csv", target="y"), "dataset file not found: no/such/file.csv"),
        (dict(dataset=str(CHURN)), "needs 'target': the name of the column that holds the class labels"),
        (dict(dataset=str(CHURN), target="monthly_charges"), "holds non-integer numbers; the builtin workloads do classification only"),
        (dict(dataset="wine", target="x"), "dataset 'wine' is bundled and has a fixed target"),
    ],
)
def test_bad_data_is_one_clear_error(args, expected):
    with pytest.raises(ValueError) as info:
        mlp.objective({}, Reporter.local(), epochs=1, **args)
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "is empty"),
        ("a,b\n1,x\n2\n", "row 3 has 1 fields, the header has 2"),
        ("a,a\n1,2\n", "the first row must name every column once"),
        ("a,b\n1,x\n2,x\n3,x\n4,x\n", "has only one class ('x')"),
    ],
)
def test_malformed_csv_is_one_clear_error(tmp_path, text, expected):
    path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        tabular.load_table(str(path), "b")


def test_parquet_without_pandas_names_the_missing_package(tmp_path):
    try:  # pandas is optional: without it, Parquet is one clear error; with it, Parquet works
        import pandas  # noqa: F401
    except ImportError:
        path = tmp_path / "data.parquet"
        path.write_bytes(b"PAR1")
        with pytest.raises(ValueError, match="reading Parquet .* needs pandas and pyarrow"):
            tabular.load_table(str(path), "y")
        return
    pyarrow = pytest.importorskip("pyarrow")  # noqa: F841
    import pandas as pd

    frame = pd.DataFrame({"x": np.arange(20.0), "kind": ["a", "b"] * 10, "y": ["p", "q", "q", "p"] * 5})
    frame.to_parquet(tmp_path / "data.parquet")
    table = tabular.load_table(str(tmp_path / "data.parquet"), "y")
    assert table.x.shape == (20, 3) and table.classes == ("p", "q")


def test_relative_dataset_path_is_found_in_the_spec_folder(tmp_path, monkeypatch):
    """The trial runner puts the spec's folder on sys.path; relative paths are looked up there."""
    spec_dir = tmp_path / "project"
    (spec_dir / "data").mkdir(parents=True)
    shutil.copy(CHURN, spec_dir / "data" / "mine.csv")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="dataset file not found: data/mine.csv"):
        tabular.resolve_path("data/mine.csv")
    monkeypatch.syspath_prepend(str(spec_dir))
    assert tabular.resolve_path("data/mine.csv") == (spec_dir / "data" / "mine.csv").resolve()


def test_missing_target_column_is_refused_before_anything_is_written(tmp_path):
    """Through the installed `hpo` script: one clear line, exit 2, no store created."""
    from shell import assert_one_line_error, hpo

    shutil.copy(CHURN, tmp_path / "churn.csv")
    spec = tmp_path / "bad-target.yaml"
    spec.write_text(
        "name: bad-target\n"
        "objective: builtin:mlp\n"
        "objective_args: {dataset: churn.csv, target: churn, epochs: 2}\n"
        "search_space: {lr: {type: float, low: 0.001, high: 0.01, log: true}}\n"
        "direction: maximize\n"
        "n_trials: 3\n"
    )
    db = tmp_path / "bad.db"
    result = hpo("run", str(spec), "--storage", f"sqlite:///{db}")
    assert_one_line_error(result, "objective_args: target column 'churn' not found in ")
    assert "its columns are: age, tenure_months, monthly_charges, contract" in result.stderr
    assert not db.exists()


def test_relative_dataset_path_is_stored_absolute(tmp_path):
    from hpo.run.submission import check_objective
    from hpo.spec.study import load_spec

    shutil.copy(CHURN, tmp_path / "churn.csv")
    spec_file = tmp_path / "ok.yaml"
    spec_file.write_text(
        "name: ok\nobjective: builtin:mlp\nobjective_args: {dataset: churn.csv, target: churned}\n"
        "search_space: mlp\nn_trials: 1\n"
    )
    spec = load_spec(spec_file)
    check_objective(spec)
    assert spec.objective_args["dataset"] == str((tmp_path / "churn.csv").resolve())


def test_mlp_check_args_refuses_bad_data_before_any_trial(tmp_path):
    shutil.copy(CHURN, tmp_path / "mine.csv")
    mlp.check_args({"dataset": "mine.csv", "target": "churned"}, base_dir=tmp_path)
    mlp.check_args({"epochs": 3})  # digits
    with pytest.raises(ValueError, match="target column 'label' not found in .*mine.csv"):
        mlp.check_args({"dataset": "mine.csv", "target": "label"}, base_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'iris'"):
        mlp.check_args({"dataset": "iris"})


def test_a_builtin_workload_resumed_from_its_checkpoint_ends_where_an_unbroken_run_does(tmp_path):
    """mlp stopped after epoch 1 of 4 (a pruned/stopped report right after its checkpoint),
    then continued: it trains epochs 2-3 only and ends with the unbroken run's exact accuracy
    (model, optimizer, schedule and shuffling state all come back)."""
    from workers.checkpoints import CheckpointFolder

    params = dict(lr=2e-3, hidden=32, layers=1, batch_size=64, schedule="cosine", optimizer="sgd")
    unbroken, reports, _ = train(mlp.objective, params, seed=5, epochs=4)

    def stop_after_epoch_1(step, value):
        return step == 1

    first = Reporter(seed=5, send=stop_after_epoch_1, checkpoints=CheckpointFolder(tmp_path))
    with pytest.raises(Pruned):
        mlp.objective(dict(params), first, epochs=4)
    seen: list[tuple[int, float]] = []
    second = Reporter(seed=5, send=lambda s, v: seen.append((s, v)) or False, checkpoints=CheckpointFolder(tmp_path))
    resumed = mlp.objective(dict(params), second, epochs=4)
    assert second.checkpoint_step == 1 and [s for s, _ in seen] == [2, 3]
    assert resumed == unbroken and seen == reports[2:]
    assert second.reported == dict(reports)  # the whole curve, the first run's part from the checkpoint
