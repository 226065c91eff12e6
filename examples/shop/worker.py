"""The shop's worker: ``minifaktory worker examples.shop.worker:worker``."""

from __future__ import annotations

from minifaktory import Client, Worker, current_job

worker = Worker(concurrency=5, queues=["critical", "default", "mail"])
#: What the handlers did, for the examples' tests (a real shop would call its services).
log: list[tuple[str, object]] = []


@worker.register("ChargeCard")
def charge_card(order_id: int) -> None:
    log.append(("charged", order_id))
    with Client() as client:  # the receipt goes out once the money is in
        client.push({"jobtype": "SendReceipt", "args": [order_id], "queue": "mail"})


@worker.register("SendReceipt")
async def send_receipt(order_id: int) -> None:
    await current_job().checkin("sending", 50)
    log.append(("receipt", order_id))


@worker.register("AskForReview")
def ask_for_review(email: str) -> None:
    log.append(("review", email))
