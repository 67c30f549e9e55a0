"""``builtin:gnn``: a message-passing graph network classifying generated graphs (plain torch).

Data, generated from ``data_seed`` so every trial sees the same graphs: ``n_graphs`` graphs of
``min_nodes``..``max_nodes`` nodes and about the same mean degree (~4), from four families, the
class to predict:

- ``random``: Erdos-Renyi, every edge independent;
- ``communities``: two dense blocks joined by a few edges (stochastic block model);
- ``small_world``: a ring lattice with some edges rewired (Watts-Strogatz);
- ``scale_free``: preferential attachment, a few hubs (Barabasi-Albert).

Node features are a constant and the node's degree, so the network has to learn from structure.
(``random`` vs ``communities`` is the hard pair: their degree distributions match.)

Network: an input projection, then ``layers`` message-passing layers of width ``width``, each
``h <- h + dropout(relu(norm(W_self h + W_neigh AGG_{j in N(i)} h_j)))`` with ``aggregation``
``mean`` or ``sum`` and optional batch norm over the nodes of a batch; the graph's vector is the
mean and the max of its nodes, followed by a linear classifier. Graphs are batched as one
disjoint union (an edge list with node offsets), messages move with ``index_add_``: no graph
library needed. Augmentation: ``drop_edge`` removes that fraction of edges from each training
batch (DropEdge), a regularizer against over-smoothing and overfitting.

Reports validation accuracy every epoch, logs training accuracy/loss, returns the final
validation accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from workers.builtin.common import Batch, bool_param, fit, float_param, int_param
from workers.reporter import Reporter

FAMILIES = ("random", "communities", "small_world", "scale_free")
AGGREGATIONS = ("mean", "sum")
MEAN_DEGREE = 4


@dataclass(frozen=True)
class Graphs:
    """Many graphs as one disjoint union: node features, an edge list (both directions) and owners."""

    x: torch.Tensor  # total_nodes x features
    edges: torch.Tensor  # 2 x total_directed_edges, global node ids
    node_graph: torch.Tensor  # total_nodes: which graph a node belongs to
    edge_graph: torch.Tensor  # total_directed_edges
    y: torch.Tensor  # n_graphs

    def to(self, device: torch.device) -> Graphs:
        return Graphs(*(t.to(device) for t in (self.x, self.edges, self.node_graph, self.edge_graph, self.y)))


@dataclass(frozen=True)
class GraphBatch:
    x: torch.Tensor
    edges: torch.Tensor  # 2 x E, node ids local to the batch
    node_graph: torch.Tensor  # 0..num_graphs-1
    num_graphs: int


def _random(n: int, rng: np.random.Generator) -> set[tuple[int, int]]:
    p = MEAN_DEGREE / (n - 1)
    return {(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < p}


def _communities(n: int, rng: np.random.Generator) -> set[tuple[int, int]]:
    half = n // 2
    # Same expected degree as _random, ~90 % of it inside the node's own block.
    p_in = 0.9 * MEAN_DEGREE / max(1, half - 1)
    p_out = 0.1 * MEAN_DEGREE / max(1, n - half)
    return {
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if rng.random() < (p_in if (i < half) == (j < half) else p_out)
    }


def _small_world(n: int, rng: np.random.Generator, rewire: float = 0.15) -> set[tuple[int, int]]:
    edges = set()
    for i in range(n):
        for k in range(1, MEAN_DEGREE // 2 + 1):
            j = (i + k) % n
            if rng.random() < rewire:
                j = int(rng.integers(n))
            if j != i:
                edges.add((min(i, j), max(i, j)))
    return edges


def _scale_free(n: int, rng: np.random.Generator) -> set[tuple[int, int]]:
    m = MEAN_DEGREE // 2
    edges = {(i, j) for i in range(m + 1) for j in range(i + 1, m + 1)}
    ends = [v for e in edges for v in e]  # a node appears once per edge end: degree-proportional
    for new in range(m + 1, n):
        targets: set[int] = set()
        while len(targets) < m:
            targets.add(ends[int(rng.integers(len(ends)))])
        for t in targets:
            edges.add((t, new))
            ends += [t, new]
    return edges


_GENERATORS = (_random, _communities, _small_world, _scale_free)


@lru_cache(maxsize=4)
def make_graphs(n_graphs: int, min_nodes: int, max_nodes: int, seed: int) -> Graphs:
    """``n_graphs`` graphs, balanced over the families, in random order."""
    if not 4 <= min_nodes <= max_nodes:
        raise ValueError(f"need 4 <= min_nodes <= max_nodes, got {min_nodes} and {max_nodes}")
    rng = np.random.default_rng(seed)
    labels = np.arange(n_graphs) % len(FAMILIES)
    rng.shuffle(labels)
    xs, edges, node_graph, edge_graph = [], [], [], []
    offset = 0
    for g, label in enumerate(labels):
        n = int(rng.integers(min_nodes, max_nodes + 1))
        pairs = np.array(sorted(_GENERATORS[label](n, rng)), dtype=np.int64).reshape(-1, 2)
        both = np.concatenate([pairs, pairs[:, ::-1]]).T  # 2 x 2E, both directions
        degree = np.bincount(both[0], minlength=n).astype(np.float32)
        xs.append(np.stack([np.ones(n, np.float32), degree / MEAN_DEGREE], axis=1))
        edges.append(both + offset)
        node_graph.append(np.full(n, g))
        edge_graph.append(np.full(both.shape[1], g))
        offset += n
    cat = lambda parts, axis=0: torch.from_numpy(np.concatenate(parts, axis=axis))  # noqa: E731
    return Graphs(
        x=cat(xs), edges=cat(edges, axis=1), node_graph=cat(node_graph),
        edge_graph=cat(edge_graph), y=torch.from_numpy(labels.astype(np.int64)),
    )


def select(graphs: Graphs, ids: torch.Tensor, drop_edge: float = 0.0, generator: torch.Generator | None = None) -> Batch:
    """The batch of graphs ``ids`` (in ascending order) with its targets; optionally drop edges."""
    ids = ids.sort().values
    node_mask = torch.isin(graphs.node_graph, ids)
    edge_mask = torch.isin(graphs.edge_graph, ids)
    if drop_edge > 0:
        keep = torch.rand(edge_mask.shape[0], generator=generator).to(edge_mask.device) >= drop_edge
        edge_mask &= keep
    new_id = torch.cumsum(node_mask, 0) - 1  # global node id -> id within the batch
    graph_pos = torch.full((int(graphs.y.shape[0]),), -1, dtype=torch.long, device=ids.device)
    graph_pos[ids] = torch.arange(len(ids), device=ids.device)
    batch = GraphBatch(
        x=graphs.x[node_mask],
        edges=new_id[graphs.edges[:, edge_mask]],
        node_graph=graph_pos[graphs.node_graph[node_mask]],
        num_graphs=len(ids),
    )
    return batch, graphs.y[ids]


class MessagePassing(nn.Module):
    def __init__(self, width: int, aggregation: str, batch_norm: bool, dropout: float) -> None:
        super().__init__()
        self.self_lin = nn.Linear(width, width, bias=not batch_norm)
        self.neigh_lin = nn.Linear(width, width, bias=False)
        self.norm = nn.BatchNorm1d(width) if batch_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.aggregation = aggregation

    def forward(self, h: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        src, dst = edges
        agg = torch.zeros_like(h).index_add_(0, dst, h[src])
        if self.aggregation == "mean":
            degree = torch.zeros(h.shape[0], device=h.device, dtype=h.dtype).index_add_(
                0, dst, torch.ones_like(dst, dtype=h.dtype)
            )
            agg = agg / degree.clamp(min=1.0)[:, None]
        return h + self.dropout(torch.relu(self.norm(self.self_lin(h) + self.neigh_lin(agg))))


class GNN(nn.Module):
    def __init__(
        self, n_features: int, n_classes: int, width: int, layers: int,
        aggregation: str = "mean", batch_norm: bool = False, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {', '.join(AGGREGATIONS)}")
        self.embed = nn.Linear(n_features, width)
        self.layers = nn.ModuleList(MessagePassing(width, aggregation, batch_norm, dropout) for _ in range(layers))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, n_classes))

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        h = self.embed(batch.x)
        for layer in self.layers:
            h = layer(h, batch.edges)
        index = batch.node_graph
        size = (batch.num_graphs, h.shape[1])
        total = torch.zeros(size, device=h.device, dtype=h.dtype).index_add_(0, index, h)
        count = torch.zeros(batch.num_graphs, device=h.device, dtype=h.dtype).index_add_(
            0, index, torch.ones_like(index, dtype=h.dtype)
        )
        mean = total / count.clamp(min=1.0)[:, None]
        peak = torch.full(size, float("-inf"), device=h.device, dtype=h.dtype).scatter_reduce(
            0, index[:, None].expand_as(h), h, reduce="amax", include_self=True
        )
        return self.head(torch.cat([mean, peak], dim=1))


def objective(
    params: dict,
    reporter: Reporter,
    epochs: int = 10,
    n_graphs: int = 800,
    val_fraction: float = 0.25,
    min_nodes: int = 12,
    max_nodes: int = 24,
    data_seed: int = 0,
) -> float:
    graphs = make_graphs(int(n_graphs), int(min_nodes), int(max_nodes), int(data_seed))
    torch.manual_seed(reporter.seed)
    device = torch.device(reporter.device)
    graphs = graphs.to(device)
    n_val = max(1, int(round(len(graphs.y) * float(val_fraction))))
    train_ids = torch.arange(n_val, len(graphs.y), device=device)
    val_ids = torch.arange(n_val, device=device)
    model = GNN(
        graphs.x.shape[1], len(FAMILIES),
        int_param(params, "width", 64),
        int_param(params, "layers", 3),
        str(params.get("aggregation", "mean")),
        bool_param(params, "batch_norm"),
        float_param(params, "dropout", 0.0),
    ).to(device)
    batch_size = int_param(params, "batch_size", 32)
    drop_edge = float_param(params, "drop_edge", 0.0)
    steps = max(1, len(train_ids) // batch_size + (len(train_ids) % batch_size > 1))

    def train_batches(generator: torch.Generator):
        order = train_ids[torch.randperm(len(train_ids), generator=generator).to(device)]
        for start in range(0, len(order), batch_size):
            ids = order[start : start + batch_size]
            if len(ids) > 1:
                yield select(graphs, ids, drop_edge, generator)

    evaluation = lambda ids: [select(graphs, ids[i : i + 512]) for i in range(0, len(ids), 512)]  # noqa: E731
    return fit(
        model, params, reporter,
        epochs=epochs, train_batches=train_batches, steps_per_epoch=steps,
        train_eval=evaluation(train_ids), val_eval=evaluation(val_ids),
    )
