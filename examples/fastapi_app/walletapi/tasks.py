"""walletapi's payq handler; ``payq worker --app walletapi.tasks --queue
walletapi.payouts`` runs it.

``walletapi.payout`` is an ``async def``: the worker runs it on its event
loop, every task of a claimed batch in flight at once. Its success captures
the withdrawal's hold (the task's settlement); ``payq.Fail`` releases it.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Dict

import payq
from walletapi import PAYOUT_KIND


async def provider_pay(to: str, amount: str, currency: str, idempotency_key: str) -> str:
    """A stand-in for the payout provider's async API: refuses accounts
    named ``invalid:...``, else "pays" and returns its reference. A real
    provider receives ``idempotency_key`` so that a retry never pays twice."""
    await asyncio.sleep(0)  # the network call
    if to.startswith("invalid:"):
        raise payq.Fail(f"the provider refused the account {to!r}")
    return "sim-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]


@payq.handler(PAYOUT_KIND)
async def payout(task: payq.TaskRun) -> Dict[str, str]:
    p = task.payload
    reference = await provider_pay(p["to"], p["amount"], p["currency"], task.idempotency_key)
    return {"provider_ref": reference}
