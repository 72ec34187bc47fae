"""The seeds' expense-approval workflow (Temporal's "expense" sample), doing real work in a temp directory.

Each expense is one machine with the seed's states:

    CreatingExpense -> ExpenseCreated -> WaitingForApproval (auto) -> ApprovalGranted
                    -> PaymentInProgress (auto) -> PaymentCompleted

- creating an expense writes ``expenses/<id>.json``;
- small amounts are approved by a policy; bigger ones wait for a manager (this script, playing the manager,
  waits with ``when()`` and a timeout, then approves); ``ApprovalGrantedEnter`` refuses an approval that names
  no approver (negotiation);
- paying appends a line to ``ledger.jsonl``, unless the budget is exhausted: then the payment step reports
  the error with ``add_err_state(ErrPayment, err)``, which activates ``ErrPayment`` and ``Exception``;
- an invalid amount makes a handler raise: the machine catches it and activates ``Exception`` (a "panic");
- ``ExceptionState`` records the failure in the expense's JSON file.

Blocking I/O runs in threads guarded by state contexts (a step whose state ended meanwhile does not report).

Run: .venv/bin/python examples/expense.py [--keep]   (--keep leaves the temp directory and prints its path)
"""

from __future__ import annotations

import json
import queue
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine import Ctx, Event, Machine, Result, State, StateNames


class S(StateNames):
    Start: str
    CreatingExpense: str
    ExpenseCreated: str
    WaitingForApproval: str
    ApprovalGranted: str
    PaymentInProgress: str
    PaymentCompleted: str
    ErrPayment: str


SCHEMA = {
    S.Start: State(),
    # CreateExpenseActivity
    S.CreatingExpense: State(require=(S.Start,), remove=(S.ExpenseCreated,)),
    S.ExpenseCreated: State(remove=(S.CreatingExpense,)),
    # WaitForDecisionActivity
    S.WaitingForApproval: State(auto=True, require=(S.ExpenseCreated,), remove=(S.ApprovalGranted,)),
    S.ApprovalGranted: State(require=(S.ExpenseCreated,), remove=(S.WaitingForApproval,)),
    # PaymentActivity
    S.PaymentInProgress: State(auto=True, require=(S.ApprovalGranted,), remove=(S.PaymentCompleted,)),
    S.PaymentCompleted: State(require=(S.ExpenseCreated, S.ApprovalGranted), remove=(S.PaymentInProgress,)),
    # a typed error state: always comes with Exception (add_err_state adds both)
    S.ErrPayment: State(require=("Exception",)),
}

POLICY_LIMIT = 200  # expenses up to this amount are approved without a manager
BUDGET = 2000  # what the ledger may pay out in total
STEP_TIMEOUT = 5.0  # every wait of this script is bounded


class BudgetExceeded(Exception):
    pass


_out = threading.Lock()


def say(text: str) -> None:
    """print() from several threads without interleaving (handlers run on whichever thread drains the queue)."""
    with _out:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def in_thread(mach: Machine, state: str, fn: Callable[[], Any]) -> None:
    """Run blocking ``fn`` in a thread; its result only counts while ``state``'s activation lasts."""
    ctx = mach.state_ctx(state)

    def run() -> None:
        try:
            report = fn()
        except Exception as exc:  # an error of the step becomes the Exception state
            if not ctx.done:
                mach.add_err(exc)
            return
        if report is not None and not ctx.done:
            report()

    threading.Thread(target=run, daemon=True).start()


class ExpenseFlow:
    """Handlers of one expense machine; ``root`` is the working directory (expenses/ and ledger.jsonl)."""

    ledger_lock = threading.Lock()  # one ledger for every expense

    def __init__(self, root: Path, expense: dict[str, Any], inbox: queue.Queue[str]) -> None:
        self.root = root
        self.inbox = inbox
        self.expense = expense
        self.path = root / "expenses" / f"{expense['id']}.json"

    def _write(self, **changes: Any) -> None:
        self.expense.update(changes)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.expense, indent=2))
        tmp.replace(self.path)  # atomic: a reader never sees half a record

    # -- CreateExpenseActivity

    def CreatingExpenseEnter(self, e: Event) -> bool:
        amount = self.expense["amount"]
        if not isinstance(amount, (int, float)) or amount <= 0:
            # raising in a handler is a "panic": the transition is canceled and Exception is activated
            raise ValueError(f"invalid amount {amount!r} for {self.expense['id']}")
        return True

    def CreatingExpenseState(self, e: Event) -> None:
        m = e.machine

        def create() -> Callable[[], Any]:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write(status="created")
            return lambda: m.add(S.ExpenseCreated, args={"record": str(self.path)})

        in_thread(m, S.CreatingExpense, create)

    def ExpenseCreatedState(self, e: Event) -> None:
        say(f"  [{e.machine.id}] record written: {Path(e.args['record']).relative_to(self.root)}")

    # -- WaitForDecisionActivity

    def WaitingForApprovalState(self, e: Event) -> None:
        m = e.machine
        self._write(status="waiting for approval")
        if self.expense["amount"] <= POLICY_LIMIT:
            say(f"  [{m.id}] {self.expense['amount']} <= {POLICY_LIMIT}: approved by policy")
            m.add(S.ApprovalGranted, args={"approver": "policy"})
        else:
            say(f"  [{m.id}] {self.expense['amount']} > {POLICY_LIMIT}: waiting for a manager")
            self.inbox.put(m.id)

    def ApprovalGrantedEnter(self, e: Event) -> bool:
        return bool(e.args.get("approver"))  # negotiation: no approver, no approval

    def ApprovalGrantedState(self, e: Event) -> None:
        self._write(status="approved", approver=e.args["approver"])

    # -- PaymentActivity

    def PaymentInProgressState(self, e: Event) -> None:
        m = e.machine
        exp = dict(self.expense)
        ledger = self.root / "ledger.jsonl"

        def pay() -> Callable[[], Any]:
            with self.ledger_lock:
                paid = 0
                if ledger.exists():
                    paid = sum(json.loads(line)["amount"] for line in ledger.read_text().splitlines())
                if paid + exp["amount"] > BUDGET:
                    err = BudgetExceeded(f"{exp['id']}: {exp['amount']} exceeds the remaining budget "
                                         f"{BUDGET - paid}")
                    # a typed error: ErrPayment + Exception, with the error in the args
                    return lambda: m.add_err_state(S.ErrPayment, err, args={"expense": exp["id"]})
                with ledger.open("a") as f:
                    f.write(json.dumps({"expense": exp["id"], "amount": exp["amount"], "to": exp["who"]}) + "\n")
            return lambda: m.add(S.PaymentCompleted, args={"paid": exp["amount"]})

        in_thread(m, S.PaymentInProgress, pay)

    def PaymentCompletedState(self, e: Event) -> None:
        self._write(status="paid")
        say(f"  [{e.machine.id}] paid {e.args['paid']} to {self.expense['who']}")

    # -- errors

    def ExceptionState(self, e: Event) -> None:
        err = e.args.get("err")
        how = "handler raised" if e.args.get("panic") else "step failed"
        say(f"  [{e.machine.id}] error ({how}): {type(err).__name__}: {err}")
        if self.path.exists():
            self._write(status="failed", error=str(err))


def wait(mach: Machine, *states: str) -> None:
    """Block until ``states`` are active or the machine is in Exception; raise on timeout.

    Two waiters, one context: whichever resolves first ends the context (no polling)."""
    either = Ctx()
    mach.when(*states, ctx=either).on_done(either.cancel)
    mach.when_err(ctx=either).on_done(either.cancel)
    if not either.wait(STEP_TIMEOUT):
        raise TimeoutError(f"{mach.id}: no {' '.join(states)} within {STEP_TIMEOUT}s: {mach.string_all()}")
    either.cancel()  # ends the waiter that did not fire


def settle(mach: Machine) -> None:
    """Let a transition that another thread is running finish, its handlers included.

    A state is active as soon as its transition applies the clock, before its final handlers (``FooState``) have
    run; they may still be running on the thread that made the mutation. ``eval(fn)`` runs ``fn`` serialised
    with transitions, i.e. after the current one."""
    if not mach.eval(lambda: None, timeout=STEP_TIMEOUT):
        raise TimeoutError(f"{mach.id}: still busy after {STEP_TIMEOUT}s")


def outcome(mach: Machine, r: int, state: str) -> str:
    """Describe a mutation's result. Made from another thread while the machine is busy, a mutation is queued
    and returns its queue tick: wait until it ran (when_queue) and look at the state."""
    if r >= Result.QUEUED:
        if not mach.when_queue(r).wait(STEP_TIMEOUT):
            raise TimeoutError(f"{mach.id}: queued mutation {r} did not run")
        return f"queued as tick {r}, then {'active' if mach.is_active(state) else 'not active'}"
    return Result(r).name


def run(root: Path) -> dict[str, str]:
    """Run four expenses, one after the other; returns {id: final status}."""
    expenses: list[dict[str, Any]] = [
        {"id": "exp-1", "who": "alice", "amount": 120, "what": "train ticket"},
        {"id": "exp-2", "who": "bob", "amount": 950, "what": "laptop"},
        {"id": "exp-3", "who": "carol", "amount": 1500, "what": "conference"},
        {"id": "exp-4", "who": "dave", "amount": -5, "what": "typo"},
    ]
    inbox: queue.Queue[str] = queue.Queue()  # approval requests for the manager: expense ids
    statuses = {}
    for exp in expenses:
        say(f"{exp['id']}: {exp['what']}, {exp['amount']}")
        flow = ExpenseFlow(root, exp, inbox)
        mach = Machine(SCHEMA, id=exp["id"], handlers=flow)
        mach.add(S.Start)
        mach.add(S.CreatingExpense)  # CANCELED for exp-4: CreatingExpenseEnter raised
        if exp["amount"] > POLICY_LIMIT and not mach.is_err():
            # the manager's part: wait for the request (bounded), read the record, decide
            try:
                asked = inbox.get(timeout=STEP_TIMEOUT)
            except queue.Empty:
                raise TimeoutError(f"{mach.id} never asked for approval: {mach.string_all()}") from None
            assert asked == mach.id
            record = json.loads(flow.path.read_text())
            # dry runs: can_add runs the negotiation handlers without changing anything
            say(f"  [{mach.id}] can approve without an approver? {Result(mach.can_add(S.ApprovalGranted)).name}")
            r = mach.add(S.ApprovalGranted, args={"approver": "manager"})
            say(f"  [{mach.id}] manager approves {record['amount']} for {record['who']}: "
                f"{outcome(mach, r, S.ApprovalGranted)}")
        wait(mach, S.PaymentCompleted)  # or Exception
        settle(mach)
        if mach.is_err():
            # the error is also kept as mach.err; the typed error state tells which step failed
            where = "payment" if mach.is_active(S.ErrPayment) else "creation"
            say(f"  [{mach.id}] stopped in Exception ({where}): {mach}")
        statuses[exp["id"]] = json.loads(flow.path.read_text())["status"] if flow.path.exists() else "rejected"
        mach.dispose()
    return statuses


def main() -> None:
    keep = "--keep" in sys.argv[1:]
    root = Path(tempfile.mkdtemp(prefix="am-expense-"))
    try:
        statuses = run(root)
        ledger = (root / "ledger.jsonl").read_text().splitlines()
        say("ledger.jsonl:")
        for line in ledger:
            say("  " + line)
        total = sum(json.loads(line)["amount"] for line in ledger)
        say(f"paid {total} of the budget {BUDGET}; statuses: "
            + ", ".join(f"{k}={v}" for k, v in statuses.items()))
        assert statuses == {"exp-1": "paid", "exp-2": "paid", "exp-3": "failed", "exp-4": "rejected"}, statuses
        assert total == 120 + 950
    finally:
        if keep:
            say(f"files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
