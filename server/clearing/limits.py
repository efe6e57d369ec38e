"""Every limit of the clearing core, with how they bind one another (checked at import).

One module, not one per domain package: the relationships that matter cross the domains (a
split's legs are one ledger posting, which must fit in one journal batch of the writer; an
order's amount times a ratio must fit in int64; a release must be able to name every leg),
and the shared ones (the one amount maximum, the one default time zone) belong to no single
domain. It imports nothing, so every layer (ledger, rules, payout, api) can import it without
cycles, and a reader sees every limit and how they bind on one page. Each section says where
the contract states its limits (the proto comments are the contract).

The asserts below are TigerBeetle's compile-time asserts: a change that breaks a relationship
fails at import, in every test and at server start, not in production under load. Runtime
settings (clearing.config) are checked where they are read.
"""

from __future__ import annotations

import datetime as dt

# ---- numbers ---------------------------------------------------------------------------------
INT64_MAX = 2**63 - 1
# Basis points: 10000 = 100% (clearing.money.BPS_ONE is the same unit).
BPS_MAX = 10_000
# The one amount maximum: the largest amount any request may carry, 10^15 minor units (10
# trillion yuan): transfers, freezes, payouts and rule-set amounts (fixed, caps, bounds).
# Balances are int64; this bound keeps one transfer far from overflowing them.
AMOUNT_MINOR_MAX = 10**15
# An order's amount (and its coupons, each and in total) is at most this, a tighter bound
# than AMOUNT_MINOR_MAX for the evaluator's arithmetic: amount x ratio (bps) fits in int64.
ORDER_AMOUNT_MINOR_MAX = 900_000_000_000_000
# The one default time zone: of counter periods (a rule set's counters without one), payout
# configurations and payout schedules.
DEFAULT_TIME_ZONE = "Asia/Shanghai"

# ---- ledger (ledger.proto) -------------------------------------------------------------------
# Transfers per journal batch: transfer_id = batch_id * BATCH_SPAN + position.
BATCH_SPAN = 65_536
# Legs (transfers) one posting may carry.
LEGS_PER_POSTING_MAX = 256
# The ledger writer's pipelined flushes: accounts known to allow a negative balance, kept
# at most (clearing.ledger.pipeline; a forgotten one only makes a batch wait).
WRITER_NEGATIVE_OK_IDS_MAX = 100_000
REQUEST_ID_LEN_MAX = 128
EXTERNAL_REF_LEN_MAX = 128
DISPLAY_NAME_LEN_MAX = 128
MEMO_LEN_MAX = 256
# The reason of an account operation (freeze, unfreeze, close).
ACCOUNT_REASON_LEN_MAX = 256
# List calls: page_size 0 means the default; above the maximum is refused.
PAGE_SIZE_DEFAULT = 100
PAGE_SIZE_MAX = 1000
# VerifyLedger: mismatched accounts listed at most.
MISMATCHES_LISTED_MAX = 100
# ListAuditEvents filters (audit.proto): a resource name, a method name.
AUDIT_RESOURCE_LEN_MAX = 128
AUDIT_METHOD_LEN_MAX = 64
# ListSplits: splits of the paid-time range one page examines at most (the other filters
# apply to those); a page that reaches it ends there, with a next_page_token.
LIST_SPLITS_SCAN_MAX = 10_000

# ---- rule sets (rule_set.proto, RuleSet) -----------------------------------------------------
RULES_MAX = 200
FEES_PER_RULE_MAX = 8
SHARES_PER_RULE_MAX = 32
SUBSIDIES_PER_RULE_MAX = 4
ATTRIBUTES_MAX = 64
ALLOWED_VALUES_MAX = 1000
PARTY_ROLES_MAX = 16
COUNTERS_MAX = 16
CONDITION_VALUES_MAX = 100  # channels, each tag list, IN / NOT_IN values
CONDITION_ATTRIBUTES_MAX = 32
TIERS_MAX = 32
RELEASE_STEPS_MAX = 8
# Levels of sub-rule-sets below a rule set, and the distinct sub-rule-sets one chain reaches.
LEVELS_MAX = 10
SUB_RULE_SETS_MAX = 256
# Sub-rule-set lookups while preloading what a rule set reaches: one round per level.
RESOLVE_ROUNDS_MAX = 12
LEGS_PER_SPLIT_MAX = 256
PRIORITY_MAX = 1000
NAME_LEN_MAX = 64
DESCRIPTION_LEN_MAX = 1024
ATTRIBUTE_DESCRIPTION_LEN_MAX = 256
LABEL_LEN_MAX = 64
VALUE_LEN_MAX = 256
TAG_LEN_MAX = 64
CHANNEL_LEN_MAX = 32
EVENT_NAME_LEN_MAX = 32
RULE_SET_BYTES_MAX = 1 << 20
# Rule-set version numbers are 1 to this (a PostgreSQL integer); 0 names the active one.
RULE_SET_VERSION_MAX = 2**31 - 1
ACTIVATION_COMMENT_LEN_MAX = 256

# ---- splits (split.proto: orders, SplitBatch, SplitStream, actions) --------------------------
ORDER_ID_LEN_MAX = 128
CHANNEL_TRANSACTION_ID_LEN_MAX = 64
ORDER_TAGS_MAX = 32
ORDER_ATTRIBUTES_MAX = 32
ORDER_PARTIES_MAX = PARTY_ROLES_MAX
ORDER_COUPONS_MAX = 16
COUPON_ID_LEN_MAX = 64
ORDER_MEMO_LEN_MAX = 256
COUNTER_OVERRIDES_MAX = 16
# Order.paid_time: at most this far ahead of the server's clock, and not before PAID_TIME_MIN
# (no order was paid before it, and counter periods of any time zone stay in range).
PAID_TIME_AHEAD_S_MAX = 300
PAID_TIME_MIN = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
# SplitBatch: at most this many orders per call.
SPLIT_BATCH_SIZE_MAX = 1000
# `clearing split batch`: its SplitBatch calls are cut at this many bytes too, well under the
# server's default message size (CLEARING_MAX_MESSAGE_BYTES, 4 MiB).
SPLIT_BATCH_REQUEST_BYTES_MAX = 2 << 20
# ...and its --batch-id, the prefix of the request ids it derives (ID:<40 hex digits>[:N]).
SPLIT_BATCH_ID_LEN_MAX = 64
# ...and the attempts of one of its calls (UNAVAILABLE, RESOURCE_EXHAUSTED: same request ids).
SPLIT_BATCH_ATTEMPTS_MAX = 10
# ...and the lines of its file, all read before anything is sent (a bad line sends nothing).
SPLIT_BATCH_FILE_LINES_MAX = 1_000_000
# SplitStream: at most this many orders read ahead of the outcomes sent.
SPLIT_STREAM_IN_FLIGHT_MAX = 1000
# SplitStream: at most this many groups of a stream's orders are being split at once.
STREAM_GROUPS_MAX = 2
# Unary Split calls of a platform split together (api/split_group.py): at most this many of
# its groups preparing (plan, counters, evaluation: before the writer) and this many not yet
# answered (preparing or waiting for their commit); calls arriving meanwhile wait and go
# together in the next group.
SPLIT_UNARY_PREPARING_MAX = 1
SPLIT_UNARY_GROUPS_MAX = 64
# SplitError.message: at most this many characters.
SPLIT_ERROR_MESSAGE_LEN_MAX = 1024
# Split alerts (an order that could not be split): message characters kept.
ALERT_MESSAGE_LEN_MAX = 256
# ReleaseSplit / CancelSplit / RefundSplit.
RELEASE_ACCOUNTS_MAX = 256
ACTION_REASON_LEN_MAX = 256
# ReleaseSplit.event_time: at most this far ahead of the server's clock.
EVENT_TIME_AHEAD_S_MAX = 300
# Releases, cancellations and refunds one split takes (`Split.actions`).
ACTIONS_PER_SPLIT_MAX = 100
REFUND_REF_LEN_MAX = 64
REFUND_REASON_LEN_MAX = 256

# The split path's account directory (clearing.splits.accounts): how long an ACTIVE account
# is taken from its cache, and how many accounts and plans' account lists it keeps.
ACCOUNT_CACHE_TTL_S = 1.0
ACCOUNT_CACHE_ENTRIES_MAX = 100_000
ACCOUNT_CACHE_PLANS_MAX = 1024
# Splits and actions stored before migration 0011 converted per transaction at start-up.
UPGRADE_ROWS_MAX = 500

# ---- payouts (payout.proto) ------------------------------------------------------------------
BANK_CODE_LEN_MAX = 32
BANK_NAME_LEN_MAX = 128
HOLDER_NAME_LEN_MAX = 128
# An account number is shown only masked, its first 4 and last 4 characters (6225****1234).
ACCOUNT_NUMBER_LEN_MIN = 8
ACCOUNT_NUMBER_LEN_MAX = 32
BRANCH_CODE_LEN = 12
PAYOUT_MEMO_LEN_MAX = 64
REVIEW_REASON_LEN_MAX = 256
FAILURE_MESSAGE_LEN_MAX = 256
# Bank transfers one payout may be cut into. The payout maximum and the bank's per-transfer
# maximum are settings (clearing.config) and per-platform configuration (payout.store): both
# refuse a maximum payout that more than this many transfers would carry, so no payout the
# limits accept needs more (the request path still refuses one, as an invariant's guard).
TRANSFERS_PER_PAYOUT_MAX = 1000
# The hour (local) payout schedules run at by default.
RUN_HOUR_DEFAULT = 2
# Longest run of consecutive non-business days the calendar may have (China's longest
# holiday is 8 days); also how far back a moved day is looked for.
SHIFT_DAYS_MAX = 31
# Calendar rows loaded at most (about 13 years of exceptions).
CALENDAR_DAYS_MAX = 5000

# ---- the admin API (platform.proto, PlatformService) ----------------------------------------
PLATFORM_NAME_LEN_MAX = 64  # platforms.name's CHECK
# Calendar days one SetBusinessCalendar changes, and the days one GetBusinessCalendar spans.
CALENDAR_DAYS_PER_CHANGE_MAX = 366
CALENDAR_RANGE_DAYS_MAX = 3660
CALENDAR_NOTE_LEN_MAX = 200
# The note of a payout configuration change's decision.
DECISION_NOTE_LEN_MAX = 512
# How often each server process writes the last use of the keys it authenticated.
KEY_LAST_USE_FLUSH_S = 30.0
# The accounts one party key may be bound to (CreateApiKey.party_account_ids).
PARTY_ACCOUNTS_MAX = 64

# ---- reconciliation (reconciliation.proto; docs/recon.md) -----------------------------------
# A statement file as uploaded (gzip or not), and once decompressed: a file beyond either is
# refused whole (STATEMENT_TOO_LARGE), so a small gzip cannot expand without bound.
STATEMENT_BYTES_MAX = 256 << 20
STATEMENT_DECOMPRESSED_BYTES_MAX = 1 << 30
# One line of a statement (its bytes, without the line break), and the lines of a file
# (the header and a channel's summary rows included).
STATEMENT_LINE_BYTES_MAX = 4096
STATEMENT_LINES_MAX = 5_000_000
# One ImportStatement message's chunk of the file.
STATEMENT_CHUNK_BYTES_MAX = 1 << 20
# Problems of a malformed file reported (the first ones, with their line numbers).
STATEMENT_PROBLEMS_MAX = 20
# The amounts of a statement's lines add up to at most this (so that every sum of a run,
# and the information side made of splits of at most ORDER_AMOUNT_MINOR_MAX each, fits in
# int64 with room to spare).
STATEMENT_AMOUNTS_MINOR_MAX = 2**62
# Parsed lines written to PostgreSQL per COPY while a file streams in.
STATEMENT_COPY_ROWS_MAX = 10_000
# A channel's name on a statement (the order's channel, CHANNEL_LEN_MAX, is the same text).
STATEMENT_CHANNEL_LEN_MAX = 32
# Statement imports one server process runs at once (each holds a database connection while
# its file streams in); one more answers RESOURCE_EXHAUSTED.
RECON_IMPORTS_MAX = 2
# The match statement of one import (recon/match.py), instead of the pool's command timeout
# (CLEARING_DB_COMMAND_TIMEOUT_S, 30 s): it reads the whole statement and the day's splits in
# one statement, 27 to 30 s for 2,000,000 lines on the 2-core development machine
# (`make bench-recon`), so 30 s cut the seeds' volume off with INTERNAL; STATEMENT_LINES_MAX
# lines take about 2.5 times that.
RECON_MATCH_TIMEOUT_S = 600.0
# work_mem of the import's transaction from its match on (SET LOCAL; PostgreSQL's default is
# 4 MB): the hash of the day's splits (238 MB for 2,000,000) and the sort of the lines' keys
# for DUPLICATE stay in memory (`make bench-recon`, bench/README.md).
# Per sort or hash node of the one statement (x hash_mem_multiplier for hashes), and at most
# RECON_IMPORTS_MAX imports per process run it at once.
RECON_MATCH_WORK_MEM_MB = 256
# A canonical statement streams into PostgreSQL by one COPY for the whole upload
# (recon/fast_import.py): its bound instead of the pool's command timeout (30 s), which a
# large file sent by a slow client would outlast.
STATEMENT_UPLOAD_TIMEOUT_S = 1800.0
# Decompressed bytes one step of gzip inflation may produce (the bound on what a step adds
# before the decompressed size is checked).
STATEMENT_INFLATE_STEP_BYTES = 1 << 20
# A statement's day: from the first day orders may be paid (PAID_TIME_MIN) to a day whose
# next day is still a date.
STATEMENT_DAY_MIN = dt.date(2000, 1, 1)
STATEMENT_DAY_MAX = dt.date(9998, 12, 31)
# ListDiscrepancies: at most this many class or state filters.
RECON_FILTERS_MAX = 8


# ---- vouchers (report.proto; docs/reports.md) ------------------------------------------------
# A voucher PDF given to VerifyVoucher (an issued one is a few tens of KiB; a split of
# 256 legs a few hundred): well under the server's default message size of 4 MiB.
VOUCHER_PDF_BYTES_MAX = 2 << 20
# Problems one VerifyVoucher reports (the first ones found).
VOUCHER_PROBLEMS_MAX = 100
# Voucher PDFs one server process renders at once (each takes about a second of CPU, most
# of it reading the CJK font): more wait their turn.
VOUCHER_RENDERS_MAX = 2
# Voucher PDFs one server process keeps after rendering them (the most recent ones).
VOUCHER_PDF_CACHE_MAX = 32

# ---- reports (report.proto, ExportReport; docs/reports.md) ----------------------------------
# A report's period: at most this many days (a year, a leap year's included).
REPORT_DAYS_MAX = 366
# The split_minutes report (splits per minute: one row per minute and currency, read from the
# splits themselves, no roll-up) covers at most this many days.
REPORT_MINUTES_DAYS_MAX = 7
# One ExportReport message's chunk of the file.
REPORT_CHUNK_BYTES_MAX = 64 << 10
# Rows fetched from the server-side cursor at a time (and handed to the XLSX encoder's
# thread at a time).
REPORT_FETCH_ROWS = 1000
# The export's cursor reads: a report over raw rows of a busy day aggregates millions of
# rows before its first row comes (minutes; bench/README.md), far beyond the pool's
# per-statement CLEARING_DB_COMMAND_TIMEOUT_S.
REPORT_QUERY_TIMEOUT_S = 1800
# Exports one server process streams at once (each holds a database connection and a
# snapshot for as long as its client reads); one more answers RESOURCE_EXHAUSTED.
REPORT_EXPORTS_MAX = 4
# Days one roll-up pass rolls at most per platform (the rest wait for the next pass).
ROLLUP_DAYS_PER_PASS_MAX = 31


# ---- how they bind ---------------------------------------------------------------------------

def _require(holds: bool, relationship: str) -> None:
    """An import-time check (not `assert`: it holds under python -O too)."""
    if not holds:
        raise AssertionError(f"clearing.limits: {relationship}")


# A posting's transfers take consecutive ids of one journal batch.
_require(LEGS_PER_POSTING_MAX <= BATCH_SPAN, "LEGS_PER_POSTING_MAX <= BATCH_SPAN")
# A split is one posting, with at most one transfer per leg (a leg held for an unavailable
# receiver has none); a refund posting has one per leg refunded.
_require(LEGS_PER_SPLIT_MAX <= LEGS_PER_POSTING_MAX, "LEGS_PER_SPLIT_MAX <= LEGS_PER_POSTING_MAX")
# An order's amount is an amount of a request, and amount x ratio fits in int64.
_require(ORDER_AMOUNT_MINOR_MAX <= AMOUNT_MINOR_MAX, "ORDER_AMOUNT_MINOR_MAX <= AMOUNT_MINOR_MAX")
_require(ORDER_AMOUNT_MINOR_MAX * BPS_MAX <= INT64_MAX,
         "ORDER_AMOUNT_MINOR_MAX * BPS_MAX <= INT64_MAX")
# The preload resolves one level per round, and needs one more to see a chain too deep.
_require(RESOLVE_ROUNDS_MAX >= LEVELS_MAX + 1, "RESOLVE_ROUNDS_MAX >= LEVELS_MAX + 1")
# `clearing split batch`: a derived request id (batch id, ':', 40 hex digits, ':' and the
# repetition of an order repeated in the file, or ':calls:' and 40 hex digits) is a request id.
_require(SPLIT_BATCH_ID_LEN_MAX + 7 + 40 <= REQUEST_ID_LEN_MAX,
         "SPLIT_BATCH_ID_LEN_MAX + 7 + 40 <= REQUEST_ID_LEN_MAX")
# An order names at most one party per role a rule set may declare.
_require(ORDER_PARTIES_MAX == PARTY_ROLES_MAX, "ORDER_PARTIES_MAX == PARTY_ROLES_MAX")
# A release may name every account of a split.
_require(RELEASE_ACCOUNTS_MAX >= LEGS_PER_SPLIT_MAX, "RELEASE_ACCOUNTS_MAX >= LEGS_PER_SPLIT_MAX")
# A split released step by step (one release policy) can take every step, then a refund
# (the split itself is not counted among its actions).
_require(ACTIONS_PER_SPLIT_MAX >= RELEASE_STEPS_MAX + 1,
         "ACTIONS_PER_SPLIT_MAX >= RELEASE_STEPS_MAX + 1")
_require(1 <= PAGE_SIZE_DEFAULT <= PAGE_SIZE_MAX, "1 <= PAGE_SIZE_DEFAULT <= PAGE_SIZE_MAX")
_require(PAGE_SIZE_MAX <= LIST_SPLITS_SCAN_MAX, "PAGE_SIZE_MAX <= LIST_SPLITS_SCAN_MAX")
# The mask shows 4 + 4 characters: a shorter number would be shown whole.
_require(8 <= ACCOUNT_NUMBER_LEN_MIN <= ACCOUNT_NUMBER_LEN_MAX,
         "8 <= ACCOUNT_NUMBER_LEN_MIN <= ACCOUNT_NUMBER_LEN_MAX")
_require(0 <= RUN_HOUR_DEFAULT <= 23, "0 <= RUN_HOUR_DEFAULT <= 23")
# A statement's channel is an order's channel (they are compared as equal texts).
_require(STATEMENT_CHANNEL_LEN_MAX == CHANNEL_LEN_MAX,
         "STATEMENT_CHANNEL_LEN_MAX == CHANNEL_LEN_MAX")
# A chunk and a line fit in a file; the lines of a full file can be counted.
_require(STATEMENT_LINE_BYTES_MAX <= STATEMENT_CHUNK_BYTES_MAX <= STATEMENT_BYTES_MAX
         <= STATEMENT_DECOMPRESSED_BYTES_MAX,
         "STATEMENT_LINE_BYTES_MAX <= STATEMENT_CHUNK_BYTES_MAX <= STATEMENT_BYTES_MAX"
         " <= STATEMENT_DECOMPRESSED_BYTES_MAX")
_require(STATEMENT_DAY_MIN == PAID_TIME_MIN.date(), "STATEMENT_DAY_MIN == PAID_TIME_MIN.date()")

# ---- backtests and the static ratio swing (clearing/risk/backtest.py, swing.py) ----------
# The static ratio-swing threshold: activating a rule-set version that moves a receiver's
# effective share by more than this (relative to its share under the active version) needs
# a second approver. 3000 bps = 30% (REQUIREMENTS.md, risk). One named value; the risk
# policy may carry its own later.
RATIO_SWING_THRESHOLD_BPS = 3000
# SimulateRuleSet: the period in days (0 means the default) and the orders re-evaluated.
BACKTEST_DAYS_DEFAULT = 7
BACKTEST_DAYS_MAX = 31
BACKTEST_ORDERS_MAX = 2_000_000
# What an activation backtests: the last SWING_BACKTEST_DAYS days, at most
# SWING_BACKTEST_ORDERS_MAX orders, the most recent first: about 0.3 s on the idle machine,
# 2 s on the loaded one (bench/README.md), inside the CLI's 10 s deadline.
SWING_BACKTEST_DAYS = 7
SWING_BACKTEST_ORDERS_MAX = 20_000
# Orders read per round trip of the backtest's server-side cursor.
BACKTEST_FETCH_ROWS = 5000
# Samples in an answer: orders whose matched rules change, orders refused; receivers listed.
BACKTEST_SAMPLE_MAX = 20
BACKTEST_RECEIVERS_MAX = 1000
# Backtests one server process runs at once (each is CPU-bound: it yields to the event
# loop between batches); one more answers RESOURCE_EXHAUSTED, BACKTEST_BUSY.
BACKTESTS_CONCURRENT_MAX = 1
# Accounts (by external_ref) a backtest keeps in memory for the orders' parties.
BACKTEST_ACCOUNTS_MAX = 100_000
_require(CALENDAR_DAYS_PER_CHANGE_MAX <= CALENDAR_DAYS_MAX,
         "CALENDAR_DAYS_PER_CHANGE_MAX <= CALENDAR_DAYS_MAX")

# ---- events and webhooks (event.proto, clearing/events, docs/events.md) ------------------
# Outbox rows the sequencer numbers per round (one transaction); more wait for the next.
EVENTS_SEQUENCE_BATCH_MAX = 20_000
# Events one WatchEvents/ListEvents read takes from the feed at once.
EVENTS_READ_BATCH_MAX = 500
# Type filters per WatchEvents/ListEvents call, and a type's length.
EVENT_TYPES_MAX = 32
EVENT_TYPE_LEN_MAX = 64
# The sequencer leader's session (it holds the lock for as long as it lives): PostgreSQL
# ends it after this many seconds without a statement (a frozen leader: its rounds run
# every CLEARING_EVENTS_SEQUENCER_INTERVAL_MS), and TCP keepalives find a vanished host
# within about idle + interval x count seconds; then a follower leads.
EVENTS_LEADER_IDLE_TIMEOUT_S = 10
EVENTS_LEADER_KEEPALIVE_IDLE_S = 5
EVENTS_LEADER_KEEPALIVE_INTERVAL_S = 2
EVENTS_LEADER_KEEPALIVE_COUNT = 3
# Events older than the retention pruned per sequencer round (the rest next round).
EVENTS_PRUNE_BATCH_MAX = 10_000
# Discrepancy events (discrepancy.opened) a reconciliation run reads back and writes to the
# outbox per statement (a run with more writes them in slices of this many).
DISCREPANCY_EVENTS_BATCH_MAX = 10_000
# Webhook endpoints per platform (enabled), a URL's and a description's length.
WEBHOOK_ENDPOINTS_MAX = 16
WEBHOOK_URL_LEN_MAX = 2048
WEBHOOK_DESCRIPTION_LEN_MAX = 256
# Deliveries one worker claims per round, and attempts in flight at once per process.
WEBHOOK_CLAIM_MAX = 100
WEBHOOK_INFLIGHT_MAX = 32
# A receiver's answer read (the rest is not kept) and kept per attempt.
WEBHOOK_RESPONSE_BYTES_MAX = 1024
# The most deliveries one endpoint may have pending (CLEARING_WEBHOOK_PENDING_MAX's ceiling):
# above its setting the endpoint is disabled (reason BACKLOG), so a receiver that stays down
# for the retry window does not grow the table without bound.
WEBHOOK_PENDING_MAX = 1_000_000
_require(EVENTS_READ_BATCH_MAX <= EVENTS_SEQUENCE_BATCH_MAX,
         "EVENTS_READ_BATCH_MAX <= EVENTS_SEQUENCE_BATCH_MAX")

# ---- the web console (clearing.console) ---------------------------------------------------
# Sessions held at once (in the console's memory); one more signs the oldest out.
CONSOLE_SESSIONS_MAX = 10_000
# Rows a console page asks for (one page of a list call; the next page is a link).
CONSOLE_PAGE_SIZE = 50
# Items counted on the overview per state before it shows "N+" (one list page each).
CONSOLE_COUNT_MAX = 500
# The overview's month of volume (one ExportReport) is kept this long per session, seconds.
CONSOLE_VOLUME_CACHE_S = 30
# A sign-in form's key, and any text field of a console form, at most (characters).
CONSOLE_FIELD_LEN_MAX = 1024
# A statement export (CSV, XLSX) reads ListEntries pages of this size, and at most this many
# rows: past it the file ends with a `truncated` line (CSV) or sheet note (XLSX).
CONSOLE_EXPORT_PAGE_SIZE = 1000
CONSOLE_EXPORT_ROWS_MAX = 100_000
# A backtest from the console (SimulateRuleSet) re-evaluates this many recent orders at most
# (as the activation's swing check does).
CONSOLE_BACKTEST_ORDERS_MAX = 20_000
# The overview's receivers chart: the top this many receiving accounts.
CONSOLE_TOP_RECEIVERS = 10
_require(CONSOLE_PAGE_SIZE <= PAGE_SIZE_MAX and CONSOLE_COUNT_MAX <= PAGE_SIZE_MAX
         and CONSOLE_EXPORT_PAGE_SIZE <= PAGE_SIZE_MAX, "console pages are list pages")

# ---- PostgreSQL pods (clearing.pods, docs/scaling.md) -------------------------------------
# Highest pod id (CLEARING_PODS, `clearing pods move --to`).
POD_ID_MAX = 1023
# Every sequence of pod N starts at N * POD_ID_SPAN: the ids of rows (accounts, splits,
# journal batches...) are unique across pods, so a platform's rows keep their ids when it
# moves. 2**32 ids of each kind per pod; journal transfer ids (batch * 65536 + position)
# then stay below 2**63 for every pod up to POD_ID_MAX.
POD_ID_SPAN = 2 ** 32
# The routing table (platform -> pod) is re-read by every process this often, and a process
# whose last good read is older than POD_ROUTES_BOUND_S reads it again before routing a call:
# a routing change reaches every process within POD_ROUTES_BOUND_S.
POD_ROUTES_POLL_S = 0.25
POD_ROUTES_BOUND_S = 1.0
_require(POD_ROUTES_POLL_S < POD_ROUTES_BOUND_S, "the poll runs within the bound")
_require((POD_ID_MAX + 1) * POD_ID_SPAN * BATCH_SPAN < 2 ** 63,
         "transfer ids of every pod fit a bigint")
