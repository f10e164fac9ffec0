"""The endpoints: top up a wallet, read it, withdraw, read a withdrawal."""

from __future__ import annotations

from typing import Any, Dict, Optional

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import payq
from walletapi import CURRENCY, NAMESPACE, PAYOUT_KIND, PAYOUT_QUEUE

router = APIRouter()
IDEMPOTENCY_KEY_CHARS_MAX = 200


class TopUp(BaseModel):
    amount: str


class Withdrawal(BaseModel):
    user: str
    amount: str
    payout_to: str


def _money(amount: str) -> payq.Money:
    # payq checks it: a string with at most the currency's decimals, never
    # a float (payq.InvalidAmount otherwise, answered 400 below).
    return payq.Money(amount, CURRENCY)


async def _accounts(db: Any, user: str) -> Dict[str, payq.Account]:
    ledger = db.ledger
    return {
        "world": await ledger.account("world", CURRENCY, NAMESPACE, allow_negative=True),
        "clearing": await ledger.account("payout-clearing", CURRENCY, NAMESPACE, allow_negative=True),
        "wallet": await ledger.account(f"user:{user}", CURRENCY, NAMESPACE),
    }


@router.post("/wallets/{user}/topup")
async def topup(user: str, body: TopUp, request: Request,
                idempotency_key: str = Header(..., max_length=IDEMPOTENCY_KEY_CHARS_MAX)) -> Dict[str, str]:
    """Credit a wallet (a stand-in for a card payment), once per key."""
    db = request.app.state.payq
    accounts = await _accounts(db, user)
    await db.ledger.transfer(accounts["world"], accounts["wallet"], _money(body.amount),
                             key=f"walletapi:topup:{idempotency_key}")
    return await wallet(user, request)


@router.get("/wallets/{user}")
async def wallet(user: str, request: Request) -> Dict[str, str]:
    """A wallet's balance and what may be spent (balance minus holds)."""
    found = await request.app.state.payq.ledger.find_account(f"user:{user}", CURRENCY, NAMESPACE)
    if found is None:
        return {"user": user, "balance": "0.00", "available": "0.00"}
    return {"user": user, "balance": str(found.balance.decimal), "available": str(found.available.decimal)}


def _withdrawal_answer(row: Any) -> Dict[str, Any]:
    return {"id": row["id"], "user": row["owner"], "amount": str(row["amount"]), "payout_to": row["payout_to"],
            "hold_id": row["hold_id"], "task_id": row["task_id"]}


@router.post("/withdrawals", status_code=201)
async def withdraw(body: Withdrawal, request: Request,
                   idempotency_key: str = Header(..., max_length=IDEMPOTENCY_KEY_CHARS_MAX)) -> Any:
    """Withdraw from a wallet to ``payout_to``, once per ``Idempotency-Key``.

    One asyncpg transaction holds the amount on the wallet, records the
    withdrawal and enqueues its payout, whose success captures the hold and
    whose failure releases it. A replay with the same key (even while the
    first request is still running: the key's row lock makes it wait)
    answers the first withdrawal again and writes nothing; the same key
    with another request is refused (422)."""
    amount = _money(body.amount)
    app = request.app
    table = f'"{app.state.settings.app_schema}".withdrawal'
    accounts = await _accounts(app.state.payq, body.user)
    async with app.state.pool.acquire() as connection:
        async with connection.transaction():
            created = await connection.fetchrow(
                f"INSERT INTO {table} (idempotency_key, owner, amount, payout_to) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (idempotency_key) DO NOTHING RETURNING *",
                idempotency_key, body.user, amount.decimal, body.payout_to)
            if created is None:
                first = await connection.fetchrow(f"SELECT * FROM {table} WHERE idempotency_key = $1",
                                                  idempotency_key)
                same = (first["owner"], first["amount"], first["payout_to"]) == (
                    body.user, amount.decimal, body.payout_to)
                if not same:
                    return JSONResponse({"error": "this Idempotency-Key was used for another withdrawal"}, 422)
                return JSONResponse(_withdrawal_answer(first), 200)
            t = await payq.aio.app_executor(connection, schema=app.state.settings.payq_schema)
            hold = await t.ledger.hold(accounts["wallet"], amount, key=f"walletapi:withdraw:{idempotency_key}")
            task = await t.enqueue(PAYOUT_KIND, {"withdrawal_id": created["id"], "to": body.payout_to,
                                                 "amount": str(amount.decimal), "currency": CURRENCY},
                                   queue=PAYOUT_QUEUE, amount=amount,
                                   settle=payq.Settle.capture(hold, into=accounts["clearing"]))
            row = await connection.fetchrow(f"UPDATE {table} SET hold_id = $2, task_id = $3 WHERE id = $1 "
                                            "RETURNING *", created["id"], hold.id, task.task_id)
    # Committed: wake the workers now rather than at their next poll.
    await app.state.payq.notify([PAYOUT_QUEUE])
    return _withdrawal_answer(row)


@router.get("/withdrawals/{withdrawal_id}")
async def withdrawal(withdrawal_id: int, request: Request) -> Any:
    """A withdrawal and where its payout is: pending, paid or failed."""
    app = request.app
    row = await app.state.pool.fetchrow(f'SELECT * FROM "{app.state.settings.app_schema}".withdrawal WHERE id = $1',
                                        withdrawal_id)
    if row is None:
        return JSONResponse({"error": "no such withdrawal"}, 404)
    task = await app.state.payq.tasks.get(row["task_id"])
    status = {"succeeded": "paid", "dead": "failed"}.get(task.state, "pending")
    provider_ref: Optional[str] = task.result.get("provider_ref") if isinstance(task.result, dict) else None
    return {**_withdrawal_answer(row), "status": status, "provider_ref": provider_ref}


def add_error_answers(app: FastAPI) -> None:
    """payq's typed errors as HTTP answers; the transaction has rolled back."""

    async def insufficient(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "insufficient funds"}, 409)

    async def bad_input(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 400)

    app.add_exception_handler(payq.InsufficientFunds, insufficient)
    app.add_exception_handler(payq.InvalidAmount, bad_input)
    app.add_exception_handler(payq.InvalidArgument, bad_input)
