"""The shop's HTTP API (JSON answers; form-encoded requests, as curl -d sends).

POST /wallets/<user>/topup   amount=100.00    money in from the outside world
GET  /wallets/<user>                          the wallet's balance
POST /orders                 user=alice amount=12.34 payout_to=bank:merchant-1
GET  /orders/<id>                             the order and its payout's state
"""

import uuid

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

import payq
from payq.contrib.django import enqueue, ledger

from orders.models import Order

CURRENCY = "CNY"
NAMESPACE = "djangoshop"  # wallets of this shop; keys below carry the name too


def world() -> payq.Account:
    """Where top-ups come from: the outside world, which may go negative."""
    return ledger().account("world", CURRENCY, "system", allow_negative=True)


def clearing() -> payq.Account:
    """Money on its way to merchants through the payout provider."""
    return ledger().account("provider:sim", CURRENCY, "system")


def wallet(user: str) -> payq.Account:
    return ledger().account(f"user:{user}", CURRENCY, NAMESPACE)


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@require_POST
def topup(request: HttpRequest, user: str) -> JsonResponse:
    # A client that retries sends the same Idempotency-Key: paid once.
    key = f"djangoshop-topup-{request.headers.get('Idempotency-Key') or uuid.uuid4()}"
    try:
        with transaction.atomic():
            done = ledger().transfer(world(), wallet(user), request.POST.get("amount", ""), key=key)
            balance = ledger().get_account(wallet(user)).balance
    except (payq.InvalidAmount, payq.InvalidArgument) as exc:
        return _error(400, str(exc))
    return JsonResponse({"transaction_id": done.id, "replayed": done.replayed, "balance": str(balance.decimal)})


@require_GET
def wallet_show(request: HttpRequest, user: str) -> JsonResponse:
    # Reading never opens a wallet: an unknown user is a 404.
    with transaction.atomic():  # payq on Django's connection runs in a transaction
        found = ledger().find_account(f"user:{user}", CURRENCY, NAMESPACE)
    if found is None:
        return _error(404, f"no wallet for {user}")
    account = found
    return JsonResponse({"user": user, "balance": str(account.balance.decimal),
                         "available": str(account.available.decimal), "currency": account.currency})


@require_POST
def order_create(request: HttpRequest) -> JsonResponse:
    user = request.POST.get("user", "")
    payout_to = request.POST.get("payout_to", "")
    if not user or not payout_to:
        return _error(400, "user and payout_to are required")
    try:
        amount = payq.Money(request.POST.get("amount", ""), CURRENCY)
        # One transaction: the order row, the wallet debit and the payout
        # task commit together, or none of them exists.
        with transaction.atomic():
            order = Order.objects.create(user=user, amount=amount.decimal, currency=CURRENCY, payout_to=payout_to)
            debit = ledger().transfer(wallet(user), clearing(), amount.minor,
                                      key=f"djangoshop-order-{order.pk}/debit", metadata={"order": order.pk})
            task = enqueue(
                "shop.payout",
                {"order_id": order.pk, "to": payout_to, "amount": str(amount.decimal), "currency": CURRENCY},
                queue="payouts",
                idempotency_key=f"djangoshop-order-{order.pk}/payout",  # what the provider sees on every attempt
                max_attempts=5,
                # If the payout definitely fails, the debit is reversed (the
                # customer gets the money back) and shop.order_refunded runs.
                settle=payq.Settle.reverse(debit, followup={
                    "kind": "shop.order_refunded", "payload": {"order_id": order.pk}, "queue": "payouts"}),
            )
            order.debit_transaction_id = debit.id
            order.payout_task_id = task.task_id
            order.save(update_fields=["debit_transaction_id", "payout_task_id"])
    except payq.InsufficientFunds:
        return _error(409, "insufficient funds")  # the order row was rolled back with the rest
    except (payq.InvalidAmount, payq.InvalidArgument) as exc:
        return _error(400, str(exc))
    return JsonResponse(order.as_json(), status=201)


@require_GET
def order_show(request: HttpRequest, order_id: int) -> JsonResponse:
    try:
        order = Order.objects.get(pk=order_id)
    except Order.DoesNotExist:
        return _error(404, f"no order {order_id}")
    return JsonResponse(order.as_json())
