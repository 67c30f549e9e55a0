"""Starts a two-node Ray cluster on this machine (ray.cluster_utils), prints its address, and
keeps it up until stdin closes. Used by tests that point hpo at an existing cluster."""

import sys

import hpo.ray_runtime  # noqa: F401  (token authentication on, as for any cluster hpo joins)
from ray.cluster_utils import Cluster

cluster = Cluster(
    initialize_head=True,
    head_node_args={"num_cpus": 1, "include_dashboard": False},
)
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()
cluster.shutdown()
