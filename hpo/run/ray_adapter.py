"""The one module of hpo that touches Ray's internals, gated on the versions CI tests.

How many GPUs a Ray runtime started on this machine would have is Ray's own detection (NVML,
``CUDA_VISIBLE_DEVICES``, ``RAY_OVERRIDE_RESOURCES``), which Ray exposes only once the runtime
runs. Asking it before the start lets `hpo run` refuse a GPU study on a machine without GPUs in
about a second rather than after a Ray start and stop (5-10 s), and run a ``cpu_fallback`` study
on local workers. On a Ray release CI did not run, :func:`local_gpus` answers None and hpo starts
Ray and asks it, as it always could (pyproject pins ray below the next minor).
"""

from __future__ import annotations

import importlib.metadata

# The Ray releases CI runs the suite on.
TESTED_RAY = ((2, 60),)


def ray_version() -> tuple[int, int] | None:
    try:
        major, minor = importlib.metadata.version("ray").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def local_gpus() -> int | None:
    """The GPUs a new local Ray runtime would have, by Ray's own detection; None where that
    cannot be asked (an untested Ray release) or Ray would refuse to start anyway (it then
    says why itself)."""
    if ray_version() not in TESTED_RAY:
        return None
    try:
        from ray._private.resource_and_label_spec import ResourceAndLabelSpec

        spec = ResourceAndLabelSpec(num_cpus=1).resolve(is_head=True, node_ip_address="127.0.0.1")
        return int(spec.num_gpus or 0)
    except Exception:  # e.g. RAY_OVERRIDE_RESOURCES asks for more GPUs than CUDA_VISIBLE_DEVICES lists
        return None
