"""The HTTP kind ``payq worker --app workerapp.http_handlers`` runs for
tests_py/test_http.py: a payout to the fake provider at
``WORKERAPP_PROVIDER_URL``, with the bearer token from
``WORKERAPP_PROVIDER_TOKEN``. No Python runs per task: the C++ engine calls
the provider.
"""

from __future__ import annotations

import os

import payq

_provider = os.environ["WORKERAPP_PROVIDER_URL"]

payq.http_handler(
    "http.payout",
    url=_provider + "/payouts",
    headers={"Authorization": payq.secret_env("WORKERAPP_PROVIDER_TOKEN", prefix="Bearer ")},
    body='{"account": "{{payload.account}}", "amount_minor": {{payload.amount_minor}},'
         ' "currency": "{{payload.currency}}"}',
    timeout_ms=5_000,
    success_when={"return_code": "SUCCESS"},
    error_codes={"NOTENOUGH": "fail", "ACCOUNT_INVALID": "fail"},
    status_url=_provider + "/payouts/{{task.idempotency_key}}",
)
