"""The shop's tests, with the minifaktory pytest plugin (``faktory`` fixture)."""

from __future__ import annotations

from typing import Any

from examples.shop import app, worker


def test_an_order_charges_then_sends_a_receipt(faktory: Any) -> None:
    worker.log.clear()
    app.place_order(42, "ann@example.com")
    faktory.assert_enqueued("ChargeCard", [42], queue="critical")
    assert faktory.drain(worker.worker) == 2  # ChargeCard, then the SendReceipt it pushed
    assert worker.log == [("charged", 42), ("receipt", 42)]


def test_the_review_request_waits_three_days(faktory: Any) -> None:
    worker.log.clear()
    app.place_order(7, "bo@example.com")
    faktory.drain(worker.worker)
    assert [j["jobtype"] for j in faktory.jobs("scheduled")] == ["AskForReview"]
    faktory.travel(2 * 86_400)
    assert faktory.jobs("mail") == []
    faktory.travel(86_400 + 60)
    faktory.drain(worker.worker)
    assert ("review", "bo@example.com") in worker.log
