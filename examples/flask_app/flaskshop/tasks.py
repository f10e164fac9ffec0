"""The shop's payq handlers; ``flask --app flaskshop payq worker`` runs them
(PAYQ_HANDLERS), each call inside the application's context.

``flaskshop.payout`` pays the merchant through the provider. The order's new
status and the task's completion commit together on the shop's session, so
a worker that lost its lease can neither mark the order paid nor complete
the task twice. A payout to an account the provider refuses fails for good:
payq reverses the debit and enqueues ``flaskshop.order_refunded``.
"""

import hashlib

from sqlalchemy import update

import payq

from flaskshop import payq_ext, shop
from flaskshop.models import PAID, REFUNDED, Order


def provider_pay(to: str, amount: str, currency: str, idempotency_key: str) -> str:
    """A stand-in for the payout provider's API: refuses accounts named
    ``invalid:...``, else "pays" and returns its reference. A real provider
    receives ``idempotency_key`` so that a retry never pays twice."""
    if to.startswith("invalid:"):
        raise payq.Fail(f"the provider refused the account {to!r}")
    return "sim-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]


@payq.handler("flaskshop.payout")
def payout(task: payq.TaskRun) -> None:
    p = task.payload
    reference = provider_pay(p["to"], p["amount"], p["currency"], task.idempotency_key)
    with shop().sessions() as session, session.begin():
        session.execute(update(Order).where(Order.id == p["order_id"]).values(status=PAID, provider_ref=reference))
        task.complete(payq_ext.on(session).executor, {"provider_ref": reference})


@payq.handler("flaskshop.order_refunded")
def order_refunded(task: payq.TaskRun) -> None:
    with shop().sessions() as session, session.begin():
        session.execute(update(Order).where(Order.id == task.payload["order_id"]).values(status=REFUNDED))
        task.complete(payq_ext.on(session).executor, {"refunded": True})
