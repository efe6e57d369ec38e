"""Retention (migration 0017, docs/retention.md): on a freshly migrated database every table
of records refuses DELETE and TRUNCATE, and UPDATE of what never changes, with a clear error;
the code's own updates still pass; no code path deletes from them; the API has no method
that deletes anything."""

from __future__ import annotations

import importlib
import pkgutil
import re
import secrets

import asyncpg
import pytest

import clearing.v1
from clearing import db
from tests.conftest import _replace_db
from tests.support import ROOT

# Every table of records, with the columns the code updates (None: it never updates a row).
KEPT: dict[str, tuple[str, ...] | None] = {
    "platforms": ("name",),
    "accounts": ("status", "frozen", "debits_posted", "credits_posted", "debits_pending",
                 "credits_pending", "display_name", "allow_negative"),
    "account_events": None,
    "transfers": ("pending_remaining", "pending_state"),
    "journal_batches": None,
    "journal_head": ("seq", "hash"),
    "requests": ("response", "ok", "error_code", "error_reason", "error_message", "error"),
    "rule_sets": ("activated_by", "activated_at", "superseded_at", "level_count"),
    "rule_set_activations": None,
    "splits": ("status", "updated_at", "refunded_minor", "detail", "body", "channel",
               "channel_transaction_id", "paid_time_ns"),
    "split_legs": ("held_minor", "released_minor", "voided_minor", "refunded_minor",
                   "refunded_posted_minor", "transfer_ids", "pending_transfer_id"),
    "split_actions": ("detail", "body", "transfer_ids"),
    "split_alerts": None,
    "bank_accounts": ("status", "replaced_at", "account_type"),
    "payouts": ("state", "paid_minor", "reviewed_by", "review_reason", "review_at",
                "failure_reason", "failure_message", "updated_at", "finished_at"),
    "bank_transfers": ("state", "attempt_count", "idempotency_key", "next_attempt_at",
                       "finished_at"),
    "bank_transfer_attempts": ("state", "bank_reference", "failure_code", "failure_message",
                               "finished_at"),
    "recon_statements": ("superseded_by",),
    "recon_statement_lines": None,
    "recon_runs": ("statement_settled_minor", "split_settled_minor", "explained_minor"),
    "recon_run_classes": None,
    "recon_discrepancies": ("state", "resolution_id"),
    "recon_settlements": None,
    "recon_resolutions": ("state", "reviewed_by_key_id", "review_note", "transfer_id",
                          "split_id", "reviewed_at", "attempt"),
    "recon_resolution_events": None,
    "vouchers": None,
    "risk_policies": ("activated_by", "activated_at"),
    "risk_policy_activations": None,
    "risk_events": ("state", "decision", "proposed_by", "posting_request_id", "updated_at"),
    "risk_event_steps": None,
    "risk_inflows": None,
    "rule_set_swing_approvals": None,
    "payout_config_changes": ("state", "decided_by", "decided_at", "note"),
    "audit_events": None,
    "audit_head": ("seq", "hash"),
}
# Tables that are not records: configuration, caches of state, the runner's own. Deletable.
MUTABLE = {
    "schema_migrations": "the migration runner's",
    "api_keys": "credentials (revoked, not deleted, by the CLI); records name the key id",
    "api_key_changes": "a counter the key caches poll",
    "admin_keys": "the operator's credentials (revoked, not deleted); changes name the key id",
    "rule_set_heads": "which version is active: the activations are the record",
    "payout_configs": "configuration",
    "payout_schedules": "configuration",
    "calendar_days": "configuration (clearing calendar unsets a day)",
    "recon_sweep_cursors": "the sweep's watermark",
    "risk_policy_heads": "which risk policy version is active: the activations are the record",
    "risk_swing_runs": "the daily swing job's claims",
    "report_rollup_days": "the roll-up job's bookkeeping (which days are rolled)",
    "report_split_days": "a roll-up: derived from the splits, rolled again when late rows come",
    "report_account_days": "a roll-up: derived from the journal, rolled again",
    "report_channel_days": "a roll-up: derived from the statements and splits, rolled again",
    "event_outbox": "a queue: the sequencer moves its rows into events",
    "events": "a feed derived from the records, pruned after CLEARING_EVENTS_RETENTION_DAYS",
    "event_heads": "the sequencer's per-platform counter",
    "webhook_endpoints": "configuration (disabled, not deleted)",
    "webhook_deliveries": "delivery bookkeeping, pruned with the events",
    "webhook_attempts": "delivery bookkeeping, pruned with the events",
    "platform_pods": "routing: which pod holds a platform (the ledger rows are the record)",
    "pod_self": "which pod a database is: configuration",
}
# A recorded column of each table with fixed columns, to show its UPDATE refused.
FIXED_SAMPLE = {"transfers": "amount", "splits": "amount_minor", "split_legs": "amount_minor",
                "payouts": "net_minor", "bank_transfers": "amount_minor",
                "recon_discrepancies": "difference_minor", "accounts": "currency_code"}
DELETING_VERBS = ("Delete", "Remove", "Purge", "Erase", "Truncate", "Drop", "Destroy")


@pytest.fixture(scope="module")
async def fresh(pg_admin_dsn):
    """A connection to a database of its own, migrated from nothing."""
    name = f"clearing_retention_{secrets.token_hex(4)}"
    await db.ensure_database(pg_admin_dsn, name)
    conn = await asyncpg.connect(_replace_db(pg_admin_dsn, name))
    try:
        await db.migrate(conn)
        yield conn
    finally:
        await conn.close()
        await db.drop_database(pg_admin_dsn, name)


async def refused(conn, sql: str) -> str:
    """The error's message; its detail and hint say why and where to read on."""
    with pytest.raises(asyncpg.RaiseError) as caught:
        await conn.execute(sql)
    assert caught.value.detail.startswith("Records of money are kept at least five years")
    assert "docs/retention.md" in caught.value.hint
    return caught.value.args[0]


async def test_every_table_is_kept_or_declared_mutable(fresh):
    tables = {r["relname"] for r in await fresh.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind IN ('r', 'p')")}
    assert tables == set(KEPT) | set(MUTABLE), (
        "a new table must be protected (SELECT retention_protect(...) in its migration) and"
        " listed in KEPT, or listed in MUTABLE with the reason it is not a record")


@pytest.mark.parametrize("table", sorted(KEPT))
async def test_delete_and_truncate_are_refused(fresh, table):
    for verb, sql in (("DELETE", f"DELETE FROM {table}"),
                      ("DELETE", f"DELETE FROM {table} WHERE false"),
                      ("TRUNCATE", f"TRUNCATE {table} CASCADE")):
        message = await refused(fresh, sql)
        assert message.startswith(f"{table} is append-only: {verb} refused"), (sql, message)
    # without CASCADE a table that others reference is refused by its foreign keys first
    with pytest.raises((asyncpg.RaiseError, asyncpg.FeatureNotSupportedError)):
        await fresh.execute(f"TRUNCATE {table}")


@pytest.mark.parametrize("table", sorted(t for t, cols in KEPT.items() if cols is None))
async def test_append_only_rows_are_never_updated(fresh, table):
    column = await fresh.fetchval(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum = 1", table)
    message = await refused(fresh, f"UPDATE {table} SET {column} = {column} WHERE false")
    assert message == f"{table} is append-only: UPDATE refused (rows never change once written)"


@pytest.mark.parametrize("table", sorted(FIXED_SAMPLE))
async def test_recorded_columns_are_never_updated(fresh, table):
    column = FIXED_SAMPLE[table]
    message = await refused(fresh, f"UPDATE {table} SET {column} = {column}")
    assert message.startswith(f"{table} is append-only: UPDATE refused (recorded columns"
                              " never change: ")
    assert column in message


@pytest.mark.parametrize("table", sorted(t for t, cols in KEPT.items() if cols))
async def test_the_codes_own_updates_still_pass(fresh, table):
    sets = ", ".join(f"{c} = {c}" for c in KEPT[table])
    assert await fresh.execute(f"UPDATE {table} SET {sets} WHERE false") == "UPDATE 0"


async def test_a_kept_row_survives_and_mutable_tables_still_delete(fresh):
    await fresh.execute("INSERT INTO platforms (name) VALUES ('kept')")
    await refused(fresh, "DELETE FROM platforms WHERE name = 'kept'")
    assert await fresh.fetchval("SELECT count(*) FROM platforms WHERE name = 'kept'") == 1
    await fresh.execute("INSERT INTO calendar_days (day, business) VALUES ('2026-10-01', false)")
    assert await fresh.execute("DELETE FROM calendar_days") == "DELETE 1"


def test_no_code_path_deletes_records():
    statement = re.compile(r"\b(DELETE\s+FROM|TRUNCATE(\s+TABLE)?)\s+(\w+)", re.IGNORECASE)
    found = []
    for path in (ROOT / "server" / "clearing").rglob("*.py"):
        if "v1" in path.relative_to(ROOT / "server" / "clearing").parts:
            continue
        for match in statement.finditer(path.read_text()):
            if match.group(3) in KEPT:
                found.append((str(path.relative_to(ROOT)), match.group(0)))
    assert found == []


def test_the_api_has_no_method_that_deletes():
    methods = []
    for module in pkgutil.iter_modules(clearing.v1.__path__):
        if module.name.endswith("_pb2"):
            mod = importlib.import_module(f"clearing.v1.{module.name}")
            for service in mod.DESCRIPTOR.services_by_name.values():
                methods += [f"{service.name}.{m.name}" for m in service.methods]
    assert len(methods) >= 40  # every service was seen
    assert [m for m in methods if m.split(".")[1].startswith(DELETING_VERBS)] == []
