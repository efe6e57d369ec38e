"""Payout rows: configuration, bank accounts, payouts with their transfers and attempts,
the writer sink that stores a payout in its hold's transaction, and listing.

Every query is scoped by platform: another platform's rows look like missing ones. The
full account number is read only by the worker (for the bank), never here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg

from clearing import audit, values
from clearing.events import outbox
from clearing.events.model import EventType
from clearing.config import PayoutSettings
from clearing.errors import FieldViolation, InvalidArgument, NotFound, invariant
from clearing.ledger.model import Posting, TransferRecord
from clearing.limits import DEFAULT_TIME_ZONE, TRANSFERS_PER_PAYOUT_MAX
from clearing.payout.model import (Attempt, BankAccount, BankAccountStatus, BankAccountType,
                                   BankTransfer, Payout, PayoutConfig, PayoutDraft,
                                   PayoutOrigin, PayoutState, TransferState)
from clearing.reasons import Reason

SINK_NAME = "payouts"

# ---- configuration ------------------------------------------------------------------------

_SQL_CONFIG = """
SELECT fee_fixed_minor, fee_bps, fee_account_id, min_amount_minor, max_amount_minor,
       daily_max_minor, review_threshold_minor, bank_transfer_max_minor, time_zone
FROM payout_configs WHERE platform_id = $1 AND currency_code = $2
"""


async def load_config(conn, settings: PayoutSettings, platform_id: int,
                      currency_code: str) -> PayoutConfig:
    """The platform's payout rules for a currency: its row, else the server's defaults
    (no fee: a fee needs a fee account, which only a row names)."""
    row = await conn.fetchrow(_SQL_CONFIG, platform_id, currency_code)
    if row is None:
        return PayoutConfig(platform_id, currency_code, 0, 0, 0, settings.min_amount_minor,
                            settings.max_amount_minor, settings.daily_max_minor,
                            settings.review_threshold_minor, settings.bank_transfer_max_minor,
                            DEFAULT_TIME_ZONE)
    return PayoutConfig(platform_id, currency_code, row["fee_fixed_minor"], row["fee_bps"],
                        row["fee_account_id"] or 0, row["min_amount_minor"],
                        row["max_amount_minor"], row["daily_max_minor"],
                        row["review_threshold_minor"], row["bank_transfer_max_minor"],
                        row["time_zone"])


_SQL_UPSERT_CONFIG = """
INSERT INTO payout_configs (platform_id, currency_code, fee_fixed_minor, fee_bps,
                            fee_account_id, min_amount_minor, max_amount_minor,
                            daily_max_minor, review_threshold_minor, bank_transfer_max_minor,
                            time_zone, updated_at)
VALUES ($1, $2, $3, $4, NULLIF($5, 0), $6, $7, $8, $9, $10, $11, now())
ON CONFLICT (platform_id, currency_code) DO UPDATE SET
  fee_fixed_minor = EXCLUDED.fee_fixed_minor, fee_bps = EXCLUDED.fee_bps,
  fee_account_id = EXCLUDED.fee_account_id, min_amount_minor = EXCLUDED.min_amount_minor,
  max_amount_minor = EXCLUDED.max_amount_minor, daily_max_minor = EXCLUDED.daily_max_minor,
  review_threshold_minor = EXCLUDED.review_threshold_minor,
  bank_transfer_max_minor = EXCLUDED.bank_transfer_max_minor,
  time_zone = EXCLUDED.time_zone, updated_at = now()
"""


async def save_config(conn, config: PayoutConfig, *, actor: audit.Actor | None = None) -> None:
    """Insert or replace a platform's payout rules for a currency, checked first
    (`check_config`), with its audit record in the same transaction (`actor` by default the
    core's admin)."""
    await check_config(conn, config)
    async with conn.transaction():  # the change and its audit record
        before = await conn.fetchrow(
            f"SELECT {_CONFIG_AUDITED} FROM payout_configs"
            " WHERE platform_id = $1 AND currency_code = $2 FOR UPDATE",
            config.platform_id, config.currency_code)
        await conn.execute(
            _SQL_UPSERT_CONFIG, config.platform_id, config.currency_code,
            config.fee_fixed_minor, config.fee_bps, config.fee_account_id,
            config.min_amount_minor, config.max_amount_minor, config.daily_max_minor,
            config.review_threshold_minor, config.bank_transfer_max_minor, config.time_zone)
        after = {c: getattr(config, c) for c in _CONFIG_AUDITED.split(", ")}
        await audit.record(conn, actor or audit.Actor.core_admin(config.platform_id),
                           "SetPayoutConfig", f"payout_config:{config.currency_code}",
                           platform_id=config.platform_id,
                           before=dict(before) if before is not None else None, after=after)


_CONFIG_AUDITED = ("fee_fixed_minor, fee_bps, fee_account_id, min_amount_minor,"
                   " max_amount_minor, daily_max_minor, review_threshold_minor,"
                   " bank_transfer_max_minor, time_zone")


async def check_config(conn, config: PayoutConfig, field_prefix: str = "") -> None:
    """The checks of a payout configuration beyond each field's range: the fee account must
    be an account of the platform in that currency, the time zone a known IANA zone, and the
    maximum payout one that TRANSFERS_PER_PAYOUT_MAX bank transfers can carry.
    InvalidArgument names the field (after `field_prefix`, e.g. "config.")."""
    problem = values.time_zone_problem(config.time_zone)
    if problem is not None:
        raise InvalidArgument([FieldViolation(field_prefix + "time_zone", problem)])
    if config.max_amount_minor > TRANSFERS_PER_PAYOUT_MAX * config.bank_transfer_max_minor:
        raise InvalidArgument([FieldViolation(
            field_prefix + "max_amount_minor", f"more than {TRANSFERS_PER_PAYOUT_MAX} bank"
            f" transfers of at most {config.bank_transfer_max_minor} minor units each can"
            " carry")])
    if config.fee_account_id:
        row = await conn.fetchrow(
            "SELECT currency_code FROM accounts WHERE account_id = $1 AND platform_id = $2",
            config.fee_account_id, config.platform_id)
        if row is None or row["currency_code"] != config.currency_code:
            raise InvalidArgument([FieldViolation(
                field_prefix + "fee_account_id",
                f"not an account of the platform in {config.currency_code}")],
                reason=Reason.FEE_ACCOUNT_INVALID)


# ---- bank accounts ------------------------------------------------------------------------

_BANK_COLUMNS = ("bank_account_id, platform_id, account_id, bank_code, bank_name, branch_code,"
                 " masked_number, holder_name, account_type, kyc_verified, status, created_at,"
                 " replaced_at")


def bank_account_from_row(r) -> BankAccount:
    return BankAccount(r["bank_account_id"], r["platform_id"], r["account_id"], r["bank_code"],
                       r["bank_name"], r["branch_code"], r["masked_number"], r["holder_name"],
                       BankAccountType(r["account_type"]), r["kyc_verified"],
                       BankAccountStatus(r["status"]), r["created_at"], r["replaced_at"])


async def active_bank_account(conn, platform_id: int, account_id: int) -> BankAccount | None:
    row = await conn.fetchrow(
        f"SELECT {_BANK_COLUMNS} FROM bank_accounts WHERE account_id = $1 AND platform_id = $2"
        f" AND status = {BankAccountStatus.ACTIVE:d}", account_id, platform_id)
    return None if row is None else bank_account_from_row(row)


async def get_bank_account(conn, platform_id: int, bank_account_id: int) -> BankAccount:
    row = await conn.fetchrow(
        f"SELECT {_BANK_COLUMNS} FROM bank_accounts WHERE bank_account_id = $1"
        " AND platform_id = $2", bank_account_id, platform_id)
    if row is None:
        raise NotFound(f"bank account {bank_account_id} not found",
                       reason=Reason.BANK_ACCOUNT_NOT_FOUND)
    return bank_account_from_row(row)


async def replace_bank_account(conn, *, platform_id: int, account_id: int, bank_code: str,
                               bank_name: str, branch_code: str, account_number: str,
                               masked_number: str, holder_name: str,
                               account_type: BankAccountType, kyc_verified: bool,
                               now: dt.datetime) -> int:
    """Mark the active binding REPLACED and insert the new one (in the caller's
    transaction); returns the new bank_account_id."""
    await conn.execute(
        f"UPDATE bank_accounts SET status = {BankAccountStatus.REPLACED:d}, replaced_at = $3"
        f" WHERE account_id = $1 AND platform_id = $2 AND status = {BankAccountStatus.ACTIVE:d}",
        account_id, platform_id, now)
    return await conn.fetchval(
        "INSERT INTO bank_accounts (platform_id, account_id, bank_code, bank_name, branch_code,"
        " account_number, masked_number, holder_name, account_type, kyc_verified, status,"
        f" created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
        f" {BankAccountStatus.ACTIVE:d}, $11)"
        " RETURNING bank_account_id",
        platform_id, account_id, bank_code, bank_name, branch_code, account_number,
        masked_number, holder_name, int(account_type), kyc_verified, now)


# ---- the sink -----------------------------------------------------------------------------

_SQL_STORE = f"""
WITH p AS (
  INSERT INTO payouts (payout_id, platform_id, request_id, payload_hash, account_id,
                       bank_account_id, currency_code, amount_minor, fee_minor, net_minor,
                       state, origin, review_required, requested_by, requested_key_id,
                       hold_transfer_id, fee_transfer_id, fee_account_id, memo, created_at,
                       updated_at)
  SELECT u.id, u.p, u.r, u.h, u.acc, u.ba, u.cur, u.a, u.fee, u.net, u.st, u.o, u.rv, u.by,
         u.key, u.hold, u.feet, u.feea, u.memo, u.at, u.at
  FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bytea[], $5::bigint[],
              $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[],
              $11::smallint[], $12::smallint[], $13::bool[], $14::text[], $15::bigint[],
              $16::bigint[], $17::bigint[], $18::bigint[], $19::text[], $20::timestamptz[])
       AS u(id, p, r, h, acc, ba, cur, a, fee, net, st, o, rv, by, key, hold, feet, feea,
            memo, at)
  RETURNING 1
), t AS (
  INSERT INTO bank_transfers (bank_transfer_id, payout_id, platform_id, sequence,
                              amount_minor, currency_code, state, next_attempt_at, created_at)
  SELECT coalesce(u.tid, nextval(pg_get_serial_sequence('bank_transfers', 'bank_transfer_id'))),
         u.id, u.p, u.seq, u.a, u.cur, {TransferState.QUEUED:d}, u.due, u.at
  FROM unnest($21::bigint[], $22::bigint[], $23::integer[], $24::bigint[], $25::text[],
              $26::timestamptz[], $27::timestamptz[], $28::bigint[])
       AS u(id, p, seq, a, cur, due, at, tid)
  RETURNING 1
)
SELECT (SELECT count(*) FROM p) AS payouts, (SELECT count(*) FROM t) AS transfers
"""


def _columns(rows: list[tuple], width: int) -> list[list]:
    cols: list[list] = [[] for _ in range(width)]
    for row in rows:
        for col, value in zip(cols, row):
            col.append(value)
    return cols


class PayoutSink:
    """Writes the payouts of a committed batch, with their bank transfers, in one
    statement, in the batch's transaction: no hold without its payout, nor the reverse.
    The draft's `created_at` is the hold's commit time."""

    async def write(self, conn: asyncpg.Connection,
                    committed: list[tuple[Posting, list[TransferRecord]]]) -> None:
        payouts: list[tuple] = []
        transfers: list[tuple] = []
        for posting, sent in committed:
            d = posting.attachment
            invariant(isinstance(d, PayoutDraft), "the payouts sink got a foreign attachment")
            invariant(len(sent) == (2 if d.fee_minor else 1), "a payout hold has 1 or 2 legs")
            at = d.created_at or sent[0].created_at
            payouts.append((d.payout_id, d.platform_id, d.request_id, d.payload_hash,
                            d.account_id, d.bank_account_id, d.currency_code, d.amount_minor,
                            d.fee_minor, d.net_minor, int(d.state), int(d.origin),
                            d.review_required, d.requested_by, d.requested_key_id,
                            sent[0].transfer_id, sent[1].transfer_id if d.fee_minor else 0,
                            d.fee_account_id if d.fee_minor else 0, d.memo, at))
            due = at if d.state is PayoutState.QUEUED else None
            ids = d.transfer_ids or [None] * len(d.transfer_amounts)
            for seq, (amount, tid) in enumerate(zip(d.transfer_amounts, ids), start=1):
                transfers.append((d.payout_id, d.platform_id, seq, amount, d.currency_code,
                                  due, at, tid))
        row = await conn.fetchrow(_SQL_STORE, *_columns(payouts, 20), *_columns(transfers, 8))
        invariant(row["payouts"] == len(payouts) and row["transfers"] == len(transfers),
                  f"payout rows written: {dict(row)}")
        if outbox.enabled():
            await outbox.write(conn, [outbox.Row(
                d.platform_id, EventType.PAYOUT_IN_REVIEW if d.state is PayoutState.PENDING_REVIEW
                else EventType.PAYOUT_REQUESTED, str(d.payout_id), d.request_id,
                payout_of_draft(d, sent), d.created_at or sent[0].created_at)
                for d, sent in ((p.attachment, s) for p, s in committed)])


def payout_of_draft(d: PayoutDraft, sent: list[TransferRecord]) -> Payout:
    """The payout as the sink writes it for a hold committed as `sent` (what `get_payout`
    reads right after the commit), in memory: RequestPayout's first response, made in the
    writer's batch."""
    at = d.created_at or sent[0].created_at
    due = at if d.state is PayoutState.QUEUED else None
    transfers = tuple(
        BankTransfer(tid, seq, amount, d.currency_code, "", TransferState.QUEUED, 0, due, at,
                     None, ())
        for seq, (amount, tid) in enumerate(zip(d.transfer_amounts, d.transfer_ids), start=1))
    return Payout(
        d.payout_id, d.platform_id, d.request_id, d.account_id, d.external_ref,
        d.bank_account_id, d.masked_number, d.currency_code, d.amount_minor, d.fee_minor,
        d.net_minor, 0, d.state, d.origin, d.review_required, d.requested_by,
        d.requested_key_id, "", "", "", "", sent[0].transfer_id,
        sent[1].transfer_id if d.fee_minor else 0, d.fee_account_id if d.fee_minor else 0,
        d.memo, at, at, None, None, transfers)


# ---- reading payouts ----------------------------------------------------------------------

_PAYOUT_COLUMNS = """
p.payout_id, p.platform_id, p.request_id, p.payload_hash, p.account_id, a.external_ref,
p.bank_account_id, b.masked_number, p.currency_code, p.amount_minor, p.fee_minor,
p.net_minor, p.paid_minor, p.state, p.origin, p.review_required, p.requested_by,
p.requested_key_id, p.reviewed_by, p.review_reason, p.failure_reason, p.failure_message,
p.hold_transfer_id, p.fee_transfer_id, p.fee_account_id, p.memo, p.created_at,
p.updated_at, p.review_at, p.finished_at
"""
_PAYOUT_FROM = """
FROM payouts p JOIN accounts a ON a.account_id = p.account_id
JOIN bank_accounts b ON b.bank_account_id = p.bank_account_id
"""


def _payout(r, transfers: tuple[BankTransfer, ...]) -> Payout:
    return Payout(
        r["payout_id"], r["platform_id"], r["request_id"], r["account_id"], r["external_ref"],
        r["bank_account_id"], r["masked_number"], r["currency_code"].strip(),
        r["amount_minor"], r["fee_minor"], r["net_minor"], r["paid_minor"],
        PayoutState(r["state"]), PayoutOrigin(r["origin"]), r["review_required"],
        r["requested_by"], r["requested_key_id"], r["reviewed_by"], r["review_reason"],
        r["failure_reason"], r["failure_message"], r["hold_transfer_id"],
        r["fee_transfer_id"], r["fee_account_id"], r["memo"], r["created_at"],
        r["updated_at"], r["review_at"], r["finished_at"], transfers)


async def _transfers(conn, payout_ids: list[int]) -> dict[int, tuple[BankTransfer, ...]]:
    rows = await conn.fetch(
        "SELECT * FROM bank_transfers WHERE payout_id = ANY($1::bigint[])"
        " ORDER BY payout_id, sequence", payout_ids)
    attempts = await conn.fetch(
        "SELECT * FROM bank_transfer_attempts WHERE bank_transfer_id = ANY($1::bigint[])"
        " ORDER BY bank_transfer_id, attempt_number", [r["bank_transfer_id"] for r in rows])
    by_transfer: dict[int, list[Attempt]] = {}
    for a in attempts:
        by_transfer.setdefault(a["bank_transfer_id"], []).append(Attempt(
            a["attempt_number"], a["idempotency_key"], TransferState(a["state"]),
            a["bank_reference"], a["failure_code"], a["failure_message"], a["submitted_at"],
            a["finished_at"]))
    out: dict[int, list[BankTransfer]] = {}
    for r in rows:
        out.setdefault(r["payout_id"], []).append(BankTransfer(
            r["bank_transfer_id"], r["sequence"], r["amount_minor"],
            r["currency_code"].strip(), r["idempotency_key"], TransferState(r["state"]),
            r["attempt_count"], r["next_attempt_at"], r["created_at"], r["finished_at"],
            tuple(by_transfer.get(r["bank_transfer_id"], ()))))
    return {k: tuple(v) for k, v in out.items()}


async def _payouts(conn, rows: Sequence) -> list[Payout]:
    transfers = await _transfers(conn, [r["payout_id"] for r in rows]) if rows else {}
    return [_payout(r, transfers.get(r["payout_id"], ())) for r in rows]


async def get_payout(conn, platform_id: int, payout_id: int) -> Payout:
    """A payout with its transfers and attempts; NotFound if not the platform's."""
    row = await conn.fetchrow(
        f"SELECT {_PAYOUT_COLUMNS} {_PAYOUT_FROM} WHERE p.payout_id = $1 AND p.platform_id = $2",
        payout_id, platform_id)
    if row is None:
        raise NotFound(f"payout {payout_id} not found", reason=Reason.PAYOUT_NOT_FOUND,
                       metadata={"payout_id": str(payout_id)})
    return (await _payouts(conn, [row]))[0]


async def payout_by_request(conn, platform_id: int,
                            request_id: str) -> tuple[Payout, bytes] | None:
    """The payout a request id created, with its payload hash, or None."""
    row = await conn.fetchrow(
        f"SELECT {_PAYOUT_COLUMNS} {_PAYOUT_FROM} WHERE p.platform_id = $1 AND p.request_id = $2",
        platform_id, request_id)
    if row is None:
        return None
    return (await _payouts(conn, [row]))[0], bytes(row["payload_hash"])


async def day_total(conn, account_id: int, since: dt.datetime) -> int:
    """What counts against the daily maximum: the amounts of the account's payouts created
    since `since`, failed ones counting only what they paid."""
    return await conn.fetchval(
        f"SELECT coalesce(sum(CASE WHEN state = {PayoutState.FAILED:d} THEN paid_minor"
        " ELSE amount_minor END), 0)"
        " FROM payouts WHERE account_id = $1 AND created_at >= $2", account_id, since)


# ---- listing ------------------------------------------------------------------------------

_LIST_KIND = "payouts"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def encode_page_token(platform_id: int, created_at: dt.datetime, payout_id: int) -> str:
    micros = (created_at - _EPOCH) // dt.timedelta(microseconds=1)
    return values.encode_page_token(_LIST_KIND, platform_id, micros, payout_id)


# The last instant a page token may point at (a datetime's range ends with year 9999).
_MICROS_MAX = (dt.datetime.max.replace(tzinfo=dt.timezone.utc) - _EPOCH) // dt.timedelta(
    microseconds=1)


def decode_page_token(token: str, platform_id: int) -> tuple[dt.datetime, int] | None:
    """(created_at, payout_id) a token points after, or None for an empty token."""
    positions = values.decode_page_token(token, _LIST_KIND, platform_id, 2)
    if positions is None:
        return None
    micros, payout_id = positions
    if micros > _MICROS_MAX or payout_id == 0:
        raise values.page_token_invalid()
    return _EPOCH + dt.timedelta(microseconds=micros), payout_id


_SQL_LIST = f"""
SELECT {_PAYOUT_COLUMNS} {_PAYOUT_FROM}
WHERE p.platform_id = $1
  AND ($2::bigint = 0 OR p.account_id = $2)
  AND (cardinality($3::smallint[]) = 0 OR p.state = ANY($3::smallint[]))
  AND ($4::timestamptz IS NULL OR p.created_at >= $4)
  AND ($5::timestamptz IS NULL OR p.created_at < $5)
  AND ($6::timestamptz IS NULL OR (p.created_at, p.payout_id) < ($6, $7::bigint))
  AND ($9::bigint[] IS NULL OR p.account_id = ANY($9::bigint[]))
ORDER BY p.created_at DESC, p.payout_id DESC
LIMIT $8
"""


async def list_payouts(conn, platform_id: int, *, page_size: int, page_token: str,
                       account_id: int, states: list[int], start: dt.datetime | None,
                       end: dt.datetime | None,
                       account_ids: frozenset[int] | None = None) -> tuple[list[Payout], str]:
    """Newest first (create time, then payout id); the token resumes after the last row.
    `account_ids` (a party key's accounts): only the payouts of those accounts."""
    after = decode_page_token(page_token, platform_id)
    rows = await conn.fetch(_SQL_LIST, platform_id, account_id, states, start, end,
                            after[0] if after else None, after[1] if after else 0,
                            page_size + 1,
                            None if account_ids is None else sorted(account_ids))
    payouts = await _payouts(conn, rows[:page_size])
    token = ""
    if len(rows) > page_size:
        last = payouts[-1]
        token = encode_page_token(platform_id, last.created_at, last.payout_id)
    return payouts, token
