"""The web side of the shop: placing an order pushes the work that can wait."""

from __future__ import annotations

import datetime as dt

from minifaktory import Client


def place_order(order_id: int, email: str) -> None:
    """Charge the card now-ish, mail the receipt after it, and a review request in 3 days."""
    in_three_days = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    with Client() as client:  # FAKTORY_URL names the server
        client.push({"jobtype": "ChargeCard", "args": [order_id], "queue": "critical"})
        client.push({
            "jobtype": "AskForReview", "args": [email], "queue": "mail",
            "at": in_three_days.isoformat().replace("+00:00", "Z"),
        })  # fmt: skip
