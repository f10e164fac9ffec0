"""The shop's payq handlers; ``manage.py payq_worker`` runs them (PAYQ["APP"]).

``shop.payout`` pays the merchant through the provider. Its success, the
order's new status and the task's completion commit together, so a worker
that loses its lease can neither mark the order paid nor complete the task
twice. A payout to an account the provider refuses fails for good: payq
reverses the debit and enqueues ``shop.order_refunded``.
"""

import hashlib

from django.db import transaction

import payq
from payq.contrib.django import executor

from orders.models import Order


def provider_pay(to: str, amount: str, currency: str, idempotency_key: str) -> str:
    """A stand-in for the payout provider's API: refuses accounts named
    ``invalid:...``, else "pays" and returns its reference. A real provider
    receives ``idempotency_key`` so that a retry never pays twice."""
    if to.startswith("invalid:"):
        raise payq.Fail(f"the provider refused the account {to!r}")
    return "sim-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]


@payq.handler("shop.payout")
def payout(task: payq.TaskRun) -> None:
    p = task.payload
    reference = provider_pay(p["to"], p["amount"], p["currency"], task.idempotency_key)
    with transaction.atomic():
        Order.objects.filter(pk=p["order_id"]).update(status=Order.PAID, provider_ref=reference)
        task.complete(executor(), {"provider_ref": reference})


@payq.handler("shop.order_refunded")
def order_refunded(task: payq.TaskRun) -> None:
    with transaction.atomic():
        Order.objects.filter(pk=task.payload["order_id"]).update(status=Order.REFUNDED)
        task.complete(executor(), {"refunded": True})
