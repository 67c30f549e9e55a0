"""A real two-node Ray cluster on loopback, started the way the README's cluster recipe says:
`ray start --block` per node as a subprocess, RAY_AUTH_MODE=token exported on every node, a
temp dir of its own, and SIGTERM to stop each node (never `ray stop`, which kills every Ray
process of the machine, this test session's runtime included)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_ports() -> list[str]:
    """Ports a node would otherwise take at fixed defaults (two nodes on one machine collide)."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


def cluster_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HPO_STORAGE", "HPO_RAY_ADDRESS", "RAY_ADDRESS")}
    env["RAY_AUTH_MODE"] = "token"  # on every node: without it a node does not join, `ray status` fails
    return env


def processes_under(temp_dir: Path) -> list[int]:
    """Live processes whose command line names ``temp_dir`` (a cluster's raylets, agents, workers)."""
    needle = str(temp_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _wait_nodes(address: str, env: dict[str, str], nodes: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    host, _, port = address.rpartition(":")
    while time.monotonic() < deadline:  # the GCS listens first (`ray status` before that hangs)
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    status = None
    while time.monotonic() < deadline:
        status = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True, env=env,
                                timeout=60)
        active = status.stdout.split("Active:")[-1].split("Pending:")[0] if "Active:" in status.stdout else ""
        if active.count("node_") >= nodes:
            return
        time.sleep(0.3)
    raise RuntimeError(f"the test cluster at {address} did not reach {nodes} nodes: {status and status.stdout}")


@contextlib.contextmanager
def ray_start_cluster(temp_dir: Path, cpus_per_node: int = 1, nodes: int = 2,
                      node_env: dict[str, str] | None = None) -> Iterator[str]:
    """Yield the head's address ("127.0.0.1:PORT") of a cluster of ``nodes`` `ray start` nodes
    (``node_env``: variables the nodes start with, as an operator's shell might have them)."""
    env = cluster_env() | (node_env or {})
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}"]
    procs = [subprocess.Popen(
        [RAY, "start", "--head", f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=false",
         f"--ray-client-server-port={free_port()}", *common, *_node_ports()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        _wait_nodes(address, env, 1)
        for _ in range(nodes - 1):
            procs.append(subprocess.Popen(
                [RAY, "start", f"--address={address}", *common, *_node_ports()],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        _wait_nodes(address, env, nodes)
        yield address
    finally:
        for proc in reversed(procs):  # workers first, then the head
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
