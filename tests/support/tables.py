"""Tables as teams have them, made up for tests: text labels, city names, booleans, dates, gaps."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

CITIES = ("Paris", "Lyon", "Nice", "Lille")


def mixed_table(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    """A customer table as a CSV export holds it: every value text or a number, with gaps.

    Columns: `customer_id` (an ID: every value distinct), `city` (4 names), `member` (True/False),
    `signup` (dates, YYYY-MM-DD), `amount` (numbers), `visits` (whole numbers 0-4) and the
    label `outcome` (`churn`/`stay`, learnable from city, amount and membership). About one cell
    in ten of city, member, signup and amount is empty.
    """
    import numpy as np
    import pandas as pd

    generator = np.random.default_rng(seed)
    city = generator.choice(CITIES, rows)
    member = generator.random(rows) < 0.5
    amount = generator.normal(50.0, 15.0, rows).round(2)
    signup = pd.Timestamp("2022-01-01") + pd.to_timedelta(generator.integers(0, 900, rows), "D")
    churn = (city == "Lille") | ((amount < 45.0) & ~member)
    table = pd.DataFrame(
        {
            "customer_id": [f"C{number:05d}" for number in range(rows)],
            "city": city.astype(object),
            "member": np.where(member, "True", "False").astype(object),
            "signup": signup.strftime("%Y-%m-%d").astype(object),
            "amount": amount,
            "visits": generator.integers(0, 5, rows),
            "outcome": np.where(churn, "churn", "stay"),
        }
    )
    for column in ("city", "member", "signup", "amount"):
        table.loc[generator.random(rows) < 0.1, column] = None
    return table
