"""What runs inside Ray workers: the trial runner, the reporter and the builtin workloads.

A user's objective has the signature ``objective(params: dict, reporter: Reporter, **args)`` and
returns the value to optimize. It never sees the database.
"""

from workers.reporter import Pruned, Reporter

__all__ = ["Pruned", "Reporter"]
