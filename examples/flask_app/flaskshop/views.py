"""The shop's HTTP API (JSON answers; form-encoded requests, as curl -d sends).

POST /wallets/<user>/topup   amount=100.00    money in from the outside world
GET  /wallets/<user>                          the wallet's balance
POST /orders                 user=alice amount=12.34 payout_to=bank:merchant-1
GET  /orders/<id>                             the order and its payout's state
"""

import uuid
from typing import Tuple

from flask import Blueprint, Response, jsonify, request

import payq
from payq.ledger import Ledger

from flaskshop import payq_ext, shop
from flaskshop.models import Order

CURRENCY = "CNY"
NAMESPACE = "flaskshop"  # wallets of this shop; keys below carry the name too

blueprint = Blueprint("shop", __name__)


def world(ledger: Ledger) -> payq.Account:
    """Where top-ups come from: the outside world, which may go negative."""
    return ledger.account("world", CURRENCY, "system", allow_negative=True)


def clearing(ledger: Ledger) -> payq.Account:
    """Money on its way to merchants through the payout provider."""
    return ledger.account("provider:sim", CURRENCY, "system")


def wallet(ledger: Ledger, user: str) -> payq.Account:
    return ledger.account(f"user:{user}", CURRENCY, NAMESPACE)


def error(status: int, message: str) -> Tuple[Response, int]:
    return jsonify(error=message), status


@blueprint.post("/wallets/<user>/topup")
def topup(user: str) -> object:
    # payq-only work: the request's transaction, committed because the view
    # answers 200 (a 4xx/5xx answer or an exception would roll it back).
    ledger = payq_ext.request_transaction.ledger
    key = f"flaskshop-topup-{request.headers.get('Idempotency-Key') or uuid.uuid4()}"
    try:
        done = ledger.transfer(world(ledger), wallet(ledger, user), request.form.get("amount", ""), key=key)
    except (payq.InvalidAmount, payq.InvalidArgument) as exc:
        return error(400, str(exc))
    balance = ledger.get_account(wallet(ledger, user)).balance
    return jsonify(transaction_id=done.id, replayed=done.replayed, balance=str(balance.decimal))


@blueprint.get("/wallets/<user>")
def wallet_show(user: str) -> object:
    # Reading never opens a wallet: an unknown user is a 404.
    account = payq_ext.database.ledger.find_account(f"user:{user}", CURRENCY, NAMESPACE)
    if account is None:
        return jsonify(error=f"no wallet for {user}"), 404
    return jsonify(user=user, balance=str(account.balance.decimal), available=str(account.available.decimal),
                   currency=account.currency)


@blueprint.post("/orders")
def order_create() -> object:
    user = request.form.get("user", "")
    payout_to = request.form.get("payout_to", "")
    if not user or not payout_to:
        return error(400, "user and payout_to are required")
    try:
        amount = payq.Money(request.form.get("amount", ""), CURRENCY)
        # One transaction on the shop's SQLAlchemy session: the order row, the
        # wallet debit and the payout task commit together, or none exists.
        with shop().sessions() as session, session.begin():
            order = Order(user=user, amount=amount.decimal, currency=CURRENCY, payout_to=payout_to)
            session.add(order)
            session.flush()  # the order's id
            on_session = payq_ext.on(session)
            ledger = on_session.ledger
            debit = ledger.transfer(wallet(ledger, user), clearing(ledger), amount.minor,
                                    key=f"flaskshop-order-{order.id}/debit", metadata={"order": order.id})
            task = on_session.enqueue(
                "flaskshop.payout",
                {"order_id": order.id, "to": payout_to, "amount": str(amount.decimal), "currency": CURRENCY},
                queue="payouts",
                idempotency_key=f"flaskshop-order-{order.id}/payout",  # what the provider sees on every attempt
                max_attempts=5,
                # If the payout definitely fails, the debit is reversed and
                # flaskshop.order_refunded runs.
                settle=payq.Settle.reverse(debit, followup={
                    "kind": "flaskshop.order_refunded", "payload": {"order_id": order.id}, "queue": "payouts"}),
            )
            order.debit_transaction_id = debit.id
            order.payout_task_id = task.task_id
            answer = order.as_json()
    except payq.InsufficientFunds:
        return error(409, "insufficient funds")  # the order row was rolled back with the rest
    except (payq.InvalidAmount, payq.InvalidArgument) as exc:
        return error(400, str(exc))
    return jsonify(answer), 201


@blueprint.get("/orders/<int:order_id>")
def order_show(order_id: int) -> object:
    with shop().sessions() as session:
        order = session.get(Order, order_id)
        if order is None:
            return error(404, f"no order {order_id}")
        return jsonify(order.as_json())
