"""Story 4: transfers with a fee and daily limits, composed from smaller
operations in nested transactions.

A marketplace checkout. A customer pays several merchants in one database
transaction; each merchant pays the platform a fee (1.5 % + 0.30, rounded
half-up) out of what it receives, and an order may carry a tip for the
courier. Customers have limits: at most 300.00 per payment and 500.00 per
day each, and at most 10 payments per day in their namespace.

Each order runs in a savepoint, its tip in a savepoint inside that one. An
order refused by a limit or for lack of funds is caught and declined without
touching the rest of the checkout; a tip refused on its own is dropped and
its order stays paid. The outer transaction commits what succeeded. Then
the accepted payments are sent again with the same keys (replayed, nothing
changes), and every invariant is checked, the ledger audit included.

Run::

    python examples/transfer_with_limits.py                    # payq's embedded server
    python examples/transfer_with_limits.py --dsn "host=..." --schema shop

The DSN defaults to ``PAYQ_DSN``, else payq's embedded server. Every run
uses accounts of its own (``--run-id``), so it can be run again and again.
Exit status: 0 when every invariant holds, 1 when one is broken.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import payq
from payq import Account, Fee, LedgerTransaction, Money
from example_support import Invariants, example_main

CURRENCY = "CNY"
MERCHANT_FEE = Fee(bps=150, fixed="0.30")  # half-up, the default rounding
PAYMENT_MAX = "300.00"
DAILY_AMOUNT_MAX = "500.00"
DAILY_PAYMENT_COUNT_MAX = 10

# Failures an order may meet for reasons of state; anything else is a bug.
REFUSALS = (payq.LimitExceeded, payq.InsufficientFunds)


@dataclass(frozen=True)
class Order:
    number: str
    merchant: str
    amount: str
    tip: Optional[str] = None


@dataclass
class OrderResult:
    order: Order
    payment: Optional[LedgerTransaction] = None
    tip: Optional[LedgerTransaction] = None
    declined: str = ""
    tip_dropped: str = ""


@dataclass(frozen=True)
class Shop:
    """The run's accounts."""

    run_id: str
    world: Account
    fees: Account
    courier: Account
    customers: Dict[str, Account]
    merchants: Dict[str, Account]

    def key(self, *parts: str) -> str:
        return "/".join(("shop", self.run_id, *parts))

    def accounts(self) -> List[Account]:
        return [self.world, self.fees, self.courier, *self.customers.values(), *self.merchants.values()]

    def balances(self, db: payq.Database) -> Dict[int, Money]:
        return {a.id: db.ledger.get_account(a).balance for a in self.accounts()}


# ---------------------------------------------------------------- small operations


def pay_merchant(t: payq.Transaction, shop: Shop, customer: Account, merchant: Account, amount: str,
                 *, key: str) -> LedgerTransaction:
    """One payment; the merchant receives it minus the platform fee."""
    return t.ledger.transfer(customer, merchant, amount, key=key, fee=MERCHANT_FEE, fee_account=shop.fees,
                             fee_payer="target", kind="payment")


def pay_tip(t: payq.Transaction, shop: Shop, customer: Account, amount: str, *, key: str) -> LedgerTransaction:
    """A tip for the courier, without a fee."""
    return t.ledger.transfer(customer, shop.courier, amount, key=key, kind="tip")


# ---------------------------------------------------------------- composed operations


def checkout_order(t: payq.Transaction, shop: Shop, customer: Account, order: Order) -> OrderResult:
    """Pay one order and its tip as one unit, in a savepoint: if the
    payment is refused, nothing of the order stays (the refusal propagates).
    The tip has a savepoint of its own, so a refused tip is dropped and the
    payment stays."""
    result = OrderResult(order)
    with t.savepoint():
        result.payment = pay_merchant(t, shop, customer, shop.merchants[order.merchant], order.amount,
                                      key=shop.key(order.number, "payment"))
        if order.tip is not None:
            try:
                with t.savepoint():
                    result.tip = pay_tip(t, shop, customer, order.tip, key=shop.key(order.number, "tip"))
            except REFUSALS as exc:
                result.tip_dropped = f"{type(exc).__name__}: {exc}"
    return result


def checkout(t: payq.Transaction, shop: Shop, customer: Account, orders: Sequence[Order]) -> List[OrderResult]:
    """A customer's checkout: every order that can be paid is paid; the
    others are declined. The caller's transaction commits the lot."""
    # Lock every account the checkout debits or credits up front, in payq's
    # canonical order: two checkouts sharing merchants can never deadlock.
    # (The fee account is deferred-credit: it is never locked for a credit.)
    t.ledger.lock(customer, shop.courier, *(shop.merchants[o.merchant] for o in orders))
    results = []
    for order in orders:
        try:
            results.append(checkout_order(t, shop, customer, order))
        except REFUSALS as exc:
            results.append(OrderResult(order, declined=f"{type(exc).__name__}: {exc}"))
    return results


# ---------------------------------------------------------------- the run


def open_shop(db: payq.Database, run_id: str) -> Shop:
    ledger = db.ledger
    system, customers_ns, merchants_ns = (f"shop-{run_id}-{part}" for part in ("system", "customers", "merchants"))
    shop = Shop(
        run_id=run_id,
        world=ledger.account("world", CURRENCY, system, allow_negative=True),
        # Every payment credits the fee account: deferred credit keeps it
        # from serialising all payments on its row lock.
        fees=ledger.account("platform-fees", CURRENCY, system, deferred_credit=True),
        courier=ledger.account("courier:7", CURRENCY, merchants_ns),
        customers={name: ledger.account(f"customer:{name}", CURRENCY, customers_ns) for name in ("ada", "ben")},
        merchants={name: ledger.account(f"merchant:{name}", CURRENCY, merchants_ns) for name in ("m1", "m2", "m3")},
    )
    ledger.transfer(shop.world, shop.customers["ada"], "800.00", key=shop.key("fund", "ada"), kind="top_up")
    ledger.transfer(shop.world, shop.customers["ben"], "50.00", key=shop.key("fund", "ben"), kind="top_up")
    ledger.set_limit("per_transaction_max", PAYMENT_MAX, namespace=customers_ns, currency=CURRENCY)
    ledger.set_limit("daily_amount", DAILY_AMOUNT_MAX, account=shop.customers["ada"])
    ledger.set_limit("daily_amount", DAILY_AMOUNT_MAX, account=shop.customers["ben"])
    ledger.set_limit("daily_count", DAILY_PAYMENT_COUNT_MAX, namespace=customers_ns, currency=CURRENCY)
    return shop


BASKETS: Dict[str, List[Order]] = {
    "ada": [
        Order("A-1", "m1", "120.00", tip="5.00"),  # paid, tip paid
        Order("A-2", "m2", "350.00"),  # above the per-payment maximum: declined
        Order("A-3", "m3", "200.00", tip="200.00"),  # paid; the tip would pass 500.00 today: dropped
    ],
    "ben": [
        Order("B-1", "m1", "80.00"),  # more than Ben has: declined
        Order("B-2", "m1", "30.00"),  # paid
    ],
}


def say_results(customer: str, results: Sequence[OrderResult]) -> None:
    for r in results:
        if r.declined:
            print(f"    {customer} {r.order.number}: DECLINED ({r.declined})")
            continue
        assert r.payment is not None
        amounts = ", ".join(f"{e.amount}" for e in r.payment.entries)
        tip = f"; tip {r.order.tip} paid" if r.tip else (f"; tip DROPPED ({r.tip_dropped})" if r.tip_dropped else "")
        print(f"    {customer} {r.order.number}: paid {r.order.amount} to {r.order.merchant} [{amounts}]{tip}")


def money(amount: str) -> Money:
    return Money(amount, CURRENCY)


def check(db: payq.Database, shop: Shop, results: Dict[str, List[OrderResult]]) -> Invariants:
    ledger = db.ledger
    inv = Invariants()
    paid = [r for rs in results.values() for r in rs if not r.declined]
    declined = [r for rs in results.values() for r in rs if r.declined]
    inv.check([r.order.number for r in paid] == ["A-1", "A-3", "B-2"], "orders A-1, A-3, B-2 paid")
    inv.check([r.order.number for r in declined] == ["A-2", "B-1"], "orders A-2 (limit) and B-1 (funds) declined")
    inv.check(all(ledger.find_transaction(shop.key(r.order.number, "payment")) is None for r in declined),
              "nothing of a declined order was written")
    inv.check(ledger.find_transaction(shop.key("A-3", "tip")) is None, "the dropped tip was not written")

    fee = {number: MERCHANT_FEE.compute(money(amount)) for number, amount in
           (("A-1", "120.00"), ("A-3", "200.00"), ("B-2", "30.00"))}
    expected = {
        shop.customers["ada"].id: money("800.00") - money("120.00") - money("5.00") - money("200.00"),
        shop.customers["ben"].id: money("50.00") - money("30.00"),
        shop.merchants["m1"].id: money("120.00") - fee["A-1"] + money("30.00") - fee["B-2"],
        shop.merchants["m2"].id: money("0.00"),
        shop.merchants["m3"].id: money("200.00") - fee["A-3"],
        shop.courier.id: money("5.00"),
        shop.fees.id: fee["A-1"] + fee["A-3"] + fee["B-2"],
    }
    for account_id, balance in expected.items():
        account = ledger.get_account(account_id)
        inv.check(account.balance == balance and account.held == money("0.00"),
                  f"{account.owner} holds {account.balance} (expected {balance})")
    total = sum(shop.balances(db).values(), money("0.00"))
    inv.check(total == money("0.00"), f"money is conserved (the run's accounts sum to {total})")
    ada_out = sum((-e.amount for e in ledger.iter_history(shop.customers["ada"]) if e.amount < money("0.00")),
                  money("0.00"))
    inv.check(ada_out <= money(DAILY_AMOUNT_MAX), f"Ada sent {ada_out} today, within {DAILY_AMOUNT_MAX}")
    audit = ledger.audit()
    for violation in audit.violations:
        print(f"    audit: {violation}")
    inv.check(audit.ok, f"ledger audit clean ({audit.accounts_checked} accounts, {audit.entries_checked} entries)")
    return inv


def run(db: payq.Database, run_id: str) -> int:
    print(f"[1/5] opening the shop's accounts and limits (run {run_id}) ...")
    shop = open_shop(db, run_id)
    print(f"      per payment <= {PAYMENT_MAX}, per customer per day <= {DAILY_AMOUNT_MAX} "
          f"and <= {DAILY_PAYMENT_COUNT_MAX} payments; merchant fee {MERCHANT_FEE.bps} bps + {MERCHANT_FEE.fixed}")

    print("[2/5] checkouts: one transaction per customer, a savepoint per order and per tip ...")
    results: Dict[str, List[OrderResult]] = {}
    for name, basket in BASKETS.items():
        with db.transaction() as t:
            results[name] = checkout(t, shop, shop.customers[name], basket)
            assert t.savepoint_depth == 0
        say_results(name, results[name])

    print("[3/5] the client retries the accepted payments with the same keys ...")
    before = shop.balances(db)
    replayed = []
    with db.transaction() as t:
        for name, rs in results.items():
            for r in rs:
                if r.payment is not None:
                    again = pay_merchant(t, shop, shop.customers[name], shop.merchants[r.order.merchant],
                                         r.order.amount, key=shop.key(r.order.number, "payment"))
                    replayed.append(again.replayed and again.id == r.payment.id)
    after = shop.balances(db)
    print(f"      {sum(replayed)} of {len(replayed)} replayed; balances unchanged: {before == after}")

    print("[4/5] folding the fee account's pending credits into its journal ...")
    print(f"      folded {db.ledger.fold_pending(shop.fees)} credits")

    print("[5/5] checking every invariant ...")
    inv = check(db, shop, results)
    inv.check(all(replayed) and before == after, "retries with the same keys were replayed and changed nothing")
    return inv.exit_status("fees, limits and savepoints behaved; the ledger is clean")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return example_main("payq example: transfers with a fee and daily limits",
                        "names this run's accounts (default: random)", run, argv)


if __name__ == "__main__":
    sys.exit(main())
