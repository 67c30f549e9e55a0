"""Declarative search spaces shipped with hpo, loadable by name (``search_space: mlp``)."""
