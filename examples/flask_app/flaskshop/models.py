from decimal import Decimal
from typing import Any, Dict, Optional

from sqlalchemy import BigInteger, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PENDING = "pending"    # wallet debited, payout queued
PAID = "paid"          # the provider paid the merchant
REFUNDED = "refunded"  # the provider refused: the debit was reversed


class Base(DeclarativeBase):
    pass


class Order(Base):
    """A customer's order, paid from their payq wallet; a payout task sends
    the money to the merchant's account at the (simulated) provider."""

    __tablename__ = "flaskshop_order"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    currency: Mapped[str] = mapped_column(String(3))
    payout_to: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    debit_transaction_id: Mapped[Optional[int]] = mapped_column(BigInteger)
    payout_task_id: Mapped[Optional[int]] = mapped_column(BigInteger)
    provider_ref: Mapped[str] = mapped_column(String(64), default="")

    def as_json(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "amount": str(self.amount),
            "currency": self.currency,
            "payout_to": self.payout_to,
            "status": self.status,
            "debit_transaction_id": self.debit_transaction_id,
            "payout_task_id": self.payout_task_id,
            "provider_ref": self.provider_ref,
        }
