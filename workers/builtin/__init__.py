"""Builtin workloads, runnable offline (data ships with scikit-learn or is generated)."""
