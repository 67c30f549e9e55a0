"""hpo: adaptive hyperparameter optimization on Ray, with Optuna studies kept in SQL."""

import os as _os
import sys as _sys

if "ray" not in _sys.modules:
    # Make Ray's default (token authentication on) explicit before Ray reads its config, which
    # also keeps Ray from logging a warning about it. Joining a cluster that runs without
    # authentication needs RAY_AUTH_MODE=disabled set by the user.
    _os.environ.setdefault("RAY_AUTH_MODE", "token")

__version__ = "0.1.0"
