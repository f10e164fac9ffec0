# Type stubs for payq's compiled core. Private: use the payq package.
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

Row = Tuple[Optional[str], ...]

class MigrateReport:
    @property
    def applied(self) -> List[int]: ...
    @property
    def version_current(self) -> int: ...

class Transaction:
    def execute(self, sql: str, params: Sequence[Optional[str]]) -> Tuple[List[str], List[Row]]: ...
    def savepoint_begin(self) -> None: ...
    def savepoint_release(self) -> None: ...
    def savepoint_rollback(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    @property
    def is_open(self) -> bool: ...
    @property
    def savepoint_depth(self) -> int: ...

class Database:
    def __init__(self, dsn: Optional[str] = None, schema: str = "payq", prepare_statements: bool = True,
                 pooler: Optional[str] = None, listen_dsn: Optional[str] = None) -> None: ...
    @property
    def dsn(self) -> str: ...
    @property
    def pooler(self) -> str: ...
    @property
    def listen_dsn(self) -> Optional[str]: ...
    @property
    def dsn_source(self) -> str: ...
    @property
    def schema(self) -> str: ...
    def migrate(self) -> MigrateReport: ...
    def schema_version(self) -> int: ...
    def begin(self) -> Transaction: ...

class EmbeddedServer:
    def __init__(
        self, home: Optional[str] = None, durable: bool = True, server_user: Optional[str] = None, port: int = 5432
    ) -> None: ...
    def up(self) -> str: ...
    def down(self) -> None: ...
    def remove_when_process_exits(self) -> None: ...
    @property
    def dsn(self) -> str: ...
    @property
    def home(self) -> str: ...
    def status(self) -> Dict[str, Any]: ...

def postgres_bin_dir() -> str: ...
def postgres_binaries() -> Tuple[str, str]: ...
def postgres_wheel_dir_set(dir: str) -> None: ...
def library_versions() -> Dict[str, str]: ...
def migrations_known() -> List[Tuple[int, str]]: ...
def _raise_for_test(name: str) -> None: ...

# ---- vocabulary (cpp/include/payq/vocabulary.hpp): the one source of these lists
TASK_STATES: Tuple[str, ...]
OUTCOMES: Tuple[str, ...]
ATTEMPT_OUTCOMES: Tuple[str, ...]
ACTIONS: Tuple[str, ...]
ACTIONS_BY_STATE: Dict[str, Tuple[str, ...]]
QUEUE_NAME_MAX: int
QUEUE_NAME_PATTERN: str
WORKER_ID_MAX: int
# (class name, base class name or None, SQLSTATE class or None), root first.
ERROR_CLASSES: Tuple[Tuple[str, Optional[str], Optional[str]], ...]
def error_class_for_sqlstate(sqlstate: str) -> str: ...
def worker_id_default() -> str: ...

# ---- money
class Fee:
    def __init__(
        self,
        rate_bps: int = 0,
        fixed_minor: int = 0,
        min_minor: Optional[int] = None,
        max_minor: Optional[int] = None,
        rounding: str = "half_up",
    ) -> None: ...
    rate_bps: int
    fixed_minor: int
    min_minor: Optional[int]
    max_minor: Optional[int]
    rounding: str

class Currency:
    code: str
    exponent: int

def amount_parse(text: str, exponent: int) -> int: ...
def amount_format(amount_minor: int, exponent: int) -> str: ...
def amount_add(a_minor: int, b_minor: int) -> int: ...
def amount_sub(a_minor: int, b_minor: int) -> int: ...
def amount_neg(amount_minor: int) -> int: ...
def amount_mul_div(amount_minor: int, numerator: int, denominator: int, rounding: str) -> int: ...
def rounding_names() -> List[str]: ...
def fee_compute(amount_minor: int, fee: Fee) -> int: ...
def amount_split(amount_minor: int, weights: Sequence[int]) -> List[int]: ...
def currency_get(code: str) -> Currency: ...
def currency_register(code: str, exponent: int) -> None: ...
def currency_known(code: str) -> bool: ...

# ---- the application's connection
class AppExecutor:
    def __init__(self, cursor: Any, schema: str = "payq",
                 copy_in: Optional[Callable[[str, bytes], None]] = None) -> None: ...
    @property
    def schema(self) -> str: ...
    @property
    def copy_supported(self) -> bool: ...
    @property
    def savepoint_depth(self) -> int: ...
    def savepoint_begin(self) -> None: ...
    def savepoint_release(self) -> None: ...
    def savepoint_rollback(self) -> None: ...

ExecutorLike = Union[AppExecutor, Transaction]
LedgerTarget = Union[Database, AppExecutor, Transaction]

def _executor_exec(
    executor: ExecutorLike, sql: str, params: Sequence[Optional[str]]
) -> Tuple[List[str], List[Row]]: ...
def _executor_savepoint(executor: ExecutorLike, action: str) -> None: ...

# ---- ledger
class Account:
    id: int
    owner: str
    namespace: str
    currency: str
    balance_minor: int
    held_minor: int
    pending_minor: int
    seq: int
    allow_negative: bool
    overdraft_minor: int
    deferred_credit: bool
    closed: bool

class Entry:
    transaction_id: int
    account_id: int
    currency: str
    amount_minor: int
    seq: Optional[int]
    balance_after: Optional[int]
    created_at: str

class LedgerTransaction:
    id: int
    key: str
    kind: str
    metadata_json: str
    reverses_id: Optional[int]
    hold_id: Optional[int]
    reversed_minor: Optional[int]
    created_at: str
    entries: List[Entry]
    replayed: bool

class Hold:
    id: int
    key: str
    account_id: int
    currency: str
    amount_minor: int
    captured_minor: int
    status: str
    expires_at: Optional[str]
    metadata_json: str
    task_id: Optional[int]
    replayed: bool

class AuditViolation:
    check: str
    subject: str
    detail: str

class AuditReport:
    violations: List[AuditViolation]
    accounts_checked: int
    entries_checked: int
    ok: bool

def ledger_account_open(
    target: LedgerTarget, owner: str, currency: str, ns: str, allow_negative: bool, overdraft_minor: int,
    deferred_credit: bool,
) -> Account: ...
def ledger_account_get(target: LedgerTarget, id: int) -> Account: ...
def ledger_account_find(target: LedgerTarget, owner: str, ns: str, currency: str) -> Optional[Account]: ...
def ledger_account_close(target: LedgerTarget, id: int) -> Account: ...
def ledger_currency_define(target: LedgerTarget, code: str, exponent: int) -> None: ...
def ledger_currencies_load(target: LedgerTarget) -> int: ...
def ledger_post(
    target: LedgerTarget, key: str, legs: Sequence[Tuple[int, int]], kind: str, metadata: str
) -> LedgerTransaction: ...
def ledger_transfer(
    target: LedgerTarget, *, key: str, source_id: int, target_id: int, amount_minor: int, fee: Optional[Fee] = None,
    fee_account_id: Optional[int] = None, fee_payer_target: bool = False, kind: str, metadata: str,
) -> LedgerTransaction: ...
def ledger_hold(
    target: LedgerTarget, key: str, account_id: int, amount_minor: int, expires_in_ms: Optional[int], metadata: str
) -> Hold: ...
def ledger_capture(
    target: LedgerTarget, key: str, hold_id: int, target_id: int, amount_minor: Optional[int], kind: str,
    metadata: str,
) -> LedgerTransaction: ...
def ledger_release(target: LedgerTarget, key: str, hold_id: int) -> Hold: ...
def ledger_reverse(
    target: LedgerTarget, key: str, transaction_id: int, amount_minor: Optional[int], kind: str, metadata: str
) -> LedgerTransaction: ...
def ledger_accounts_lock(target: LedgerTarget, ids: Sequence[int]) -> None: ...
def ledger_holds_expire(target: LedgerTarget, count_max: int) -> int: ...
def ledger_pending_fold(target: LedgerTarget, account_id: int, count_max: int) -> int: ...
def ledger_limit_set(
    target: LedgerTarget, account_id: Optional[int], ns: Optional[str], currency: Optional[str], kind: str,
    value: int,
) -> None: ...
def ledger_limit_remove(
    target: LedgerTarget, account_id: Optional[int], ns: Optional[str], currency: Optional[str], kind: str
) -> None: ...
def ledger_accounts_list(
    target: LedgerTarget, after_id: int, limit: int, owner: Optional[str]
) -> List[Account]: ...
def ledger_history(target: LedgerTarget, account_id: int, after_seq: int, limit: int) -> List[Entry]: ...
def ledger_transaction_get(target: LedgerTarget, id: int) -> LedgerTransaction: ...
def ledger_transaction_find(target: LedgerTarget, key: str) -> Optional[LedgerTransaction]: ...
def ledger_hold_get(target: LedgerTarget, id: int) -> Hold: ...
def ledger_audit(target: LedgerTarget) -> AuditReport: ...

# ---- outbox
class Settlement:
    hold_id: Optional[int]
    capture_account_id: Optional[int]
    reverse_transaction_id: Optional[int]
    followup_json: Optional[str]

class TaskSpec:
    kind: str
    payload_json: str
    queue: str
    priority: int
    delay_ms: int
    attempt_max: int
    timeout_ms: int
    unique_key: Optional[str]
    partition_key: Optional[str]
    idempotency_key: Optional[str]
    amount_minor: Optional[int]
    currency: Optional[str]
    held: bool
    settlement: Settlement
    trace_context: Optional[TraceContext]
    encrypt: bool
    keyring: Optional[Keyring]  # write-only: reads give None

class EnqueueResult:
    task_id: int
    created: bool

class TaskAction:
    task_id: int
    action: str
    actor: str
    note: str
    created_at: str

class CronEntry:
    name: str
    schedule: str
    time_zone: str
    queue: str
    kind: str
    payload_json: str

class QueueOverview:
    name: str
    paused: bool
    paused_until: Optional[str]
    concurrency_max: Optional[int]
    rate_count_max: Optional[int]
    rate_window_ms: Optional[int]
    amount_max_minor: Optional[int]
    amount_currency: Optional[str]
    amount_window_ms: Optional[int]
    weight: int
    pending: int
    runnable: int
    running: int
    held: int
    dead: int
    needs_review: int
    oldest_runnable_age_ms: Optional[int]
    started_last_minute: int

class Task:
    id: int
    queue: str
    kind: str
    payload_json: str
    state: str
    priority: int
    attempt: int
    attempt_max: int
    timeout_ms: int
    unique_key: Optional[str]
    partition_key: Optional[str]
    idempotency_key: str
    amount_minor: Optional[int]
    currency: Optional[str]
    settlement: Settlement
    lease_token: Optional[int]
    lease_until: Optional[str]
    worker_id: Optional[str]
    result_json: Optional[str]
    error: Optional[str]
    run_at: str
    created_at: str
    finished_at: Optional[str]
    @property
    def trace_context(self) -> Optional[TraceContext]: ...

class TaskAttempt:
    task_id: int
    attempt: int
    lease_token: int
    worker_id: str
    outcome: str
    error: Optional[str]
    duration_ms: int
    started_at: str
    finished_at: str
    traceback: Optional[str]

class QueueAction:
    id: int
    queue: str
    action: str
    actor: str
    note: str
    detail_json: str
    created_at: str

class Completion:
    state: str
    alerted: bool
    next_run_in_ms: Optional[int]

def outbox_enqueue_batch(target: LedgerTarget, specs: Sequence[TaskSpec]) -> List[EnqueueResult]: ...
# From this many tasks on, a batch without unique keys is written with COPY where the executor can.
TASK_BATCH_COPY_COUNT_MIN: int
def outbox_claim(target: LedgerTarget, queue: str, worker_id: str, count_max: int) -> List[Task]: ...
def outbox_complete(
    target: LedgerTarget, *, task_id: int, lease_token: int, attempt: int, outcome: str, result_json: str = "null",
    error: str = "", retry_after_ms: Optional[int] = None, worker_id: str, duration_ms: int,
) -> Completion: ...
def outbox_task_get(target: LedgerTarget, id: int) -> Task: ...
def outbox_tasks_list(
    target: LedgerTarget, *, state: Optional[str] = None, queue: Optional[str] = None, kind: Optional[str] = None,
    key: Optional[str] = None, created_before_ms_ago: Optional[int] = None, after_id: int = 0, limit: int = 100,
) -> List[Task]: ...
def outbox_queues_overview(target: LedgerTarget) -> List[QueueOverview]: ...
def outbox_actions(target: LedgerTarget, task_id: int) -> List[TaskAction]: ...
def outbox_cron_list(target: LedgerTarget) -> List[CronEntry]: ...
def outbox_cron_remove(target: LedgerTarget, name: str) -> None: ...
def inbox_receive(
    target: LedgerTarget, provider: str, event_id: str, key: str, applied: bool, payload_json: str
) -> Tuple[str, Optional[int], Optional[str]]: ...
def inbox_prune(target: LedgerTarget, older_than_ms: int, count_max: int) -> int: ...
def outbox_attempts(target: LedgerTarget, id: int) -> List[TaskAttempt]: ...
def outbox_stats(target: LedgerTarget) -> List[Tuple[str, str, int]]: ...
def outbox_task_action(target: LedgerTarget, id: int, action: str, actor: str, note: str) -> None: ...
def outbox_task_resolve(target: LedgerTarget, id: int, applied: bool, actor: str, note: str,
                        capture_account_id: Optional[int], hold_release_manual: bool) -> None: ...
def outbox_queue_configure(
    target: LedgerTarget, name: str, *, concurrency_max: Optional[int], rate_count_max: Optional[int],
    rate_window_ms: Optional[int], amount_max_minor: Optional[int], amount_currency: Optional[str],
    amount_window_ms: Optional[int], weight: int, actor: str = ..., note: str = ...,
) -> None: ...
def outbox_queue_pause(target: LedgerTarget, name: str, paused: bool, *, actor: str = ..., note: str = ...) -> None: ...
def outbox_queue_pause_until(
    target: LedgerTarget, name: str, pause_ms: int, *, actor: str = ..., note: str = ...,
) -> None: ...
def outbox_queue_actions(target: LedgerTarget, queue: Optional[str], limit: int) -> List[QueueAction]: ...
def outbox_leases_rescue(target: LedgerTarget, count_max: int) -> int: ...
def outbox_prune(target: LedgerTarget, finished_before_ms_ago: int, count_max: int) -> int: ...
def outbox_cron_set(
    target: LedgerTarget, name: str, schedule: str, time_zone: str, queue: str, kind: str, payload_json: str
) -> None: ...
def outbox_cron_fire(target: LedgerTarget) -> int: ...

# ---- worker
class HandlerRegistry:
    def __init__(self) -> None: ...
    def add_python(
        self, kind: str, adapter: Any, delay_ms_base: Optional[int], delay_ms_max: Optional[int],
        multiplier: Optional[int], batched_completion: bool, encrypt: bool = ...,
    ) -> None: ...
    def keyring_set(self, keyring: Keyring) -> None: ...
    def add_python_async(
        self, kind: str, starter: Any, delay_ms_base: Optional[int], delay_ms_max: Optional[int],
        multiplier: Optional[int], batched_completion: bool, encrypt: bool = ...,
    ) -> None: ...
    def remove(self, kind: str) -> bool: ...
    def kinds(self) -> List[str]: ...

class WorkerStats:
    claimed: int
    succeeded: int
    retried: int
    failed: int
    unknown: int
    unknown_kind: int
    handler_exceptions: int
    completed_by_handler: int
    batched_completions: int
    async_started: int
    async_abandoned: int
    queue_pauses: int
    lease_lost: int
    given_back: int
    complete_errors: int
    database_errors: int
    in_flight: int
    maintenance_ticks: int
    maintenance_leader: bool
    leases_rescued: int
    holds_expired: int
    tasks_pruned: int
    inbox_events_pruned: int
    cron_tasks_enqueued: int
    attempt_duration_counts: List[int]
    attempt_duration_seconds_sum: float
    attempt_duration_ms_sum: int

attempt_duration_bounds_ms: List[int]
attempt_duration_bounds_seconds: List[float]

class Worker:
    def __init__(
        self, database: Database, registry: HandlerRegistry, *, queues: Sequence[Tuple[str, int]], concurrency: int,
        batch: int, poll_ms: Optional[int], grace_ms: Optional[int], worker_id: str, listen: bool, maintenance: bool,
        maintenance_interval_ms: Optional[int], prune_after_ms: Optional[int], log: bool,
    ) -> None: ...
    def start(self) -> None: ...
    def request_stop(self) -> None: ...
    def stop(self) -> None: ...
    def stop_requested(self) -> bool: ...
    def stop_wait_for(self, timeout_ms: int) -> bool: ...
    def stats(self) -> WorkerStats: ...

def notify_queues(database: Database, queues: Sequence[str]) -> None: ...

# ---- http
class HttpClient:
    def __init__(self, transfer_count_max: int = 4096) -> None: ...
    def transfer_count(self) -> int: ...

class HttpKind:
    @property
    def method(self) -> str: ...
    @property
    def url(self) -> str: ...

def http_kind_compile(
    *, method: str, url: str, headers: Sequence[Tuple[str, str, Optional[str]]], body: Optional[str],
    idempotency_header: str, connect_timeout_ms: int, timeout_ms: int, response_body_bytes_max: int,
    follow_redirects: bool, ca_file: Optional[str], status_rules: Sequence[Tuple[int, int, str]],
    success_when: Sequence[Tuple[str, str]], success_mismatch: str, error_code_field: str,
    error_codes: Sequence[Tuple[str, str]], rate_limited_pause_ms: int, retry_after_ms_max: int,
    status_url: Optional[str], status_not_found: Sequence[int], send_traceparent: bool,
) -> HttpKind: ...
def registry_add_http(
    registry: HandlerRegistry, kind: str, http_kind: HttpKind, client: HttpClient,
    status_check: Optional[Callable[[Task], Tuple[str, str, str]]], delay_ms_base: Optional[int],
    delay_ms_max: Optional[int], multiplier: Optional[int], encrypt: bool = ...,
) -> None: ...

# ---- tracing
class TraceContext:
    def __init__(self, traceparent: str, tracestate: str = "") -> None: ...
    @property
    def traceparent(self) -> str: ...
    @property
    def tracestate(self) -> str: ...

def tracing_install(hook: Any) -> None: ...
def tracing_uninstall() -> None: ...
def tracing_enabled() -> bool: ...
def tracing_current_span() -> Optional[int]: ...
def tracing_flush() -> None: ...

# ---- encryption at rest (bind_keyring.cpp)
class Keyring:
    def __init__(self) -> None: ...
    def add(self, id: str, key: bytes) -> None: ...
    def add_base64(self, id: str, key_base64: str) -> None: ...
    def current_set(self, id: str) -> None: ...
    def current(self) -> str: ...
    def has(self, id: str) -> bool: ...
    def ids(self) -> List[str]: ...
    def empty(self) -> bool: ...
    @staticmethod
    def parse(keys: str, current: str) -> Keyring: ...
    @staticmethod
    def file_read(path: str) -> Keyring: ...
    @staticmethod
    def from_env() -> Keyring: ...
    @staticmethod
    def key_generate_base64() -> str: ...

class ReencryptBatch:
    examined: int
    rotated: int
    unreadable: List[int]
    last_id: int
    done: bool

def encryption_json_seal(keyring: Keyring, field: str, task_id: int, kind: str, clear_json: str) -> str: ...
def encryption_json_open(keyring: Keyring, field: str, task_id: int, kind: str, envelope_json: str) -> str: ...
def encryption_text_open(keyring: Keyring, field: str, task_id: int, kind: str, sealed: str) -> str: ...
def encryption_json_key(json_text: str) -> Optional[str]: ...
def encryption_text_key(text: str) -> Optional[str]: ...
def encryption_task_open(keyring: Keyring, task: Task) -> Task: ...
def encryption_attempt_open(keyring: Keyring, kind: str, attempt: TaskAttempt) -> TaskAttempt: ...
def encryption_task_encrypted(task: Task) -> bool: ...
def tasks_reencrypt(target: Any, keyring: Keyring, after_id: int, count_max: int) -> ReencryptBatch: ...
def tasks_key_use(target: Any) -> List[Tuple[str, str, int]]: ...
