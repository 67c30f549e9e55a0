"""hpo: adaptive hyperparameter optimization on Ray, with Optuna studies kept in SQL."""

__version__ = "0.1.0"
