from django.db import models


class Order(models.Model):
    """A customer's order, paid from their payq wallet; a payout task sends
    the money to the merchant's account at the (simulated) provider."""

    PENDING = "pending"    # wallet debited, payout queued
    PAID = "paid"          # the provider paid the merchant
    REFUNDED = "refunded"  # the provider refused: the debit was reversed

    user = models.CharField(max_length=64)
    amount = models.DecimalField(max_digits=18, decimal_places=2)
    currency = models.CharField(max_length=3, default="CNY")
    payout_to = models.CharField(max_length=128)
    status = models.CharField(max_length=16, default=PENDING)
    debit_transaction_id = models.BigIntegerField(null=True)
    payout_task_id = models.BigIntegerField(null=True)
    provider_ref = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def as_json(self) -> dict:
        return {
            "id": self.pk,
            "user": self.user,
            "amount": str(self.amount),
            "currency": self.currency,
            "payout_to": self.payout_to,
            "status": self.status,
            "debit_transaction_id": self.debit_transaction_id,
            "payout_task_id": self.payout_task_id,
            "provider_ref": self.provider_ref,
        }
