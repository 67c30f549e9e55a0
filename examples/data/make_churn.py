"""Regenerate examples/data/churn.csv: a synthetic customer-churn table (mixed column types).

    python examples/data/make_churn.py

Numeric, categorical (strings) and yes/no columns, a few empty cells, and a string target
`churned` (yes/no) that depends on the features through a noisy logistic model.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

ROWS = 1200
OUT = Path(__file__).with_name("churn.csv")


def main() -> None:
    rng = np.random.default_rng(2024)
    contract = rng.choice(["month-to-month", "one-year", "two-year"], size=ROWS, p=[0.55, 0.25, 0.2])
    payment = rng.choice(["card", "bank-transfer", "e-check", "mailed-check"], size=ROWS)
    fiber = rng.choice(["yes", "no"], size=ROWS, p=[0.45, 0.55])
    tenure = rng.integers(1, 73, size=ROWS)
    monthly = np.round(rng.normal(65, 25, size=ROWS).clip(18, 120), 2)
    calls = rng.poisson(1.5, size=ROWS)
    age = np.round(rng.normal(45, 14, size=ROWS).clip(18, 90))
    logit = (
        -0.6
        + 1.4 * (contract == "month-to-month")
        - 1.0 * (contract == "two-year")
        + 0.7 * (payment == "e-check")
        + 0.6 * (fiber == "yes")
        - 0.045 * (tenure - 30)
        + 0.02 * (monthly - 65)
        + 0.45 * (calls - 1.5)
        - 0.01 * (age - 45)
    )
    churned = rng.random(ROWS) < 1 / (1 + np.exp(-logit))
    with OUT.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["age", "tenure_months", "monthly_charges", "contract", "payment_method",
                    "fiber_optic", "support_calls", "churned"])
        for i in range(ROWS):
            age_cell = "" if rng.random() < 0.03 else int(age[i])  # a few unknown ages
            w.writerow([age_cell, int(tenure[i]), f"{monthly[i]:.2f}", contract[i],
                        payment[i], fiber[i], int(calls[i]), "yes" if churned[i] else "no"])


if __name__ == "__main__":
    main()
