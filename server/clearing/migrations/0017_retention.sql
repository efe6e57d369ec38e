-- Retention (docs/retention.md): the records of money are kept at least five years, so no
-- interface deletes them, the database included. Triggers refuse DELETE and TRUNCATE on every
-- table that records money or its evidence (the journal and its hash chain, accounts, the
-- filed rule sets, splits, payouts, reconciliation), and UPDATE of what is never changed once
-- written: whole rows where the code never updates, the recorded columns (ids, parties,
-- amounts, currency, times) where the code moves a state. The code's own updates (a pending
-- transfer's remainder, a split's or payout's state, a discrepancy's resolution...) name none
-- of those columns, so their triggers do not even fire (`UPDATE OF` column triggers).
--
-- Statement-level triggers: one call per statement, none per row, and a DELETE that matches
-- no row is refused too. None is on INSERT: the ledger writer's one statement pays nothing.
-- What they do not stop: a superuser (session_replication_role = replica) or a table owner
-- (ALTER TABLE ... DISABLE TRIGGER). Against those the hash chain and VerifyLedger stand;
-- docs/retention.md says which role owns the tables.
-- This migration does not depend on 0015 or 0016 (the runner applies every missing version
-- in order, gaps allowed). A later table of records (vouchers...) calls retention_protect in
-- its own migration; tests/integration/test_retention.py fails until every table is either
-- protected or listed there as mutable.

CREATE FUNCTION retention_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused%', TG_TABLE_NAME, TG_OP,
        CASE WHEN TG_NARGS > 0 THEN ' (' || TG_ARGV[0] || ')' ELSE '' END
        USING DETAIL = 'Records of money are kept at least five years and never deleted.',
              HINT = 'See docs/retention.md: old months are archived, not deleted.';
END $$;

-- Protects `tbl`: DELETE and TRUNCATE refused; UPDATE refused altogether when
-- `fixed_columns` is NULL, refused when it names any of `fixed_columns` otherwise ('{}':
-- updates allowed).
CREATE FUNCTION retention_protect(tbl regclass, fixed_columns text[] DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    name text := (SELECT relname FROM pg_class WHERE oid = tbl);
BEGIN
    EXECUTE format('CREATE TRIGGER %I BEFORE DELETE OR TRUNCATE ON %s'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION retention_refuse()',
                   name || '_retention_keep', tbl);
    IF fixed_columns IS NULL THEN
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %s'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION retention_refuse(%L)',
                       name || '_retention_fixed', tbl, 'rows never change once written');
    ELSIF cardinality(fixed_columns) > 0 THEN
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OF %s ON %s'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION retention_refuse(%L)',
                       name || '_retention_fixed',
                       (SELECT string_agg(quote_ident(c), ', ') FROM unnest(fixed_columns) c),
                       tbl, 'recorded columns never change: ' || array_to_string(fixed_columns, ', '));
    END IF;
END $$;

-- The ledger. journal_head moves with every batch; it may not disappear.
SELECT retention_protect('platforms', '{platform_id}');
SELECT retention_protect('accounts', '{account_id, platform_id, external_ref, kind, owner_type,'
                                     ' currency_code, created_at}');
SELECT retention_protect('account_events');
SELECT retention_protect('transfers', '{transfer_id, platform_id, batch_id, request_id,'
                                      ' debit_account_id, credit_account_id, amount,'
                                      ' currency_code, mode, pending_id, memo, created_at}');
SELECT retention_protect('journal_batches');
SELECT retention_protect('journal_head', '{}');

-- The filed rules (the contract a split was made under) and their activations.
SELECT retention_protect('rule_sets', '{platform_id, name, version, rule_set_id, content,'
                                      ' content_sha256, plan, plan_sha256, published_by,'
                                      ' published_at}');
SELECT retention_protect('rule_set_activations');

-- Splits. A split's detail and body change once, when a pre-0011 row is converted.
SELECT retention_protect('splits', '{split_id, platform_id, order_id, request_id, payload_hash,'
                                   ' rule_set_name, rule_set_version, currency_code,'
                                   ' amount_minor, channel_fee_minor, distributed_minor,'
                                   ' subsidy_minor, fee_minor, created_at}');
SELECT retention_protect('split_legs', '{split_id, leg_index, kind, account_id,'
                                       ' debit_account_id, amount_minor}');
SELECT retention_protect('split_actions', '{action_id, split_id, platform_id, request_id,'
                                          ' payload_hash, created_at}');
SELECT retention_protect('split_alerts');

-- Payouts and their bank transfers.
SELECT retention_protect('bank_accounts', '{bank_account_id, platform_id, account_id, bank_code,'
                                          ' account_number, holder_name,'
                                          ' created_at}');
SELECT retention_protect('payouts', '{payout_id, platform_id, request_id, payload_hash,'
                                    ' account_id, bank_account_id, currency_code, amount_minor,'
                                    ' fee_minor, net_minor, hold_transfer_id, fee_transfer_id,'
                                    ' fee_account_id, created_at}');
SELECT retention_protect('bank_transfers', '{bank_transfer_id, payout_id, platform_id, sequence,'
                                           ' amount_minor, currency_code, created_at}');
SELECT retention_protect('bank_transfer_attempts', '{bank_transfer_id, attempt_number,'
                                                   ' idempotency_key, submitted_at}');

-- Reconciliation. recon_resolution_events keeps its row trigger of 0013 (same message).
SELECT retention_protect('recon_statements', '{statement_id, platform_id, channel,'
                                             ' settlement_date, format, content_sha256,'
                                             ' size_bytes, line_count, currency_code,'
                                             ' settled_minor, request_id, key_id, imported_at}');
SELECT retention_protect('recon_statement_lines');
SELECT retention_protect('recon_runs', '{run_id, platform_id, statement_id, channel,'
                                       ' settlement_date, time_zone, created_at}');
SELECT retention_protect('recon_run_classes');
SELECT retention_protect('recon_discrepancies', '{discrepancy_id, platform_id, run_id, class,'
                                                ' order_id, channel_transaction_id, line_number,'
                                                ' line_type, split_id, statement_amount_minor,'
                                                ' statement_fee_minor, statement_currency_code,'
                                                ' split_amount_minor, split_fee_minor,'
                                                ' split_currency_code, difference_minor,'
                                                ' created_at, description, payout_id,'
                                                ' bank_transfer_id}');
SELECT retention_protect('recon_settlements');
SELECT retention_protect('recon_resolutions', '{resolution_id, platform_id, discrepancy_id,'
                                              ' action, note, amount_minor, currency_code,'
                                              ' order_message, proposed_by_key_id, request_id,'
                                              ' created_at}');
SELECT retention_protect('recon_resolution_events');

-- Idempotency records: the first answer of every write. An unfinished one gets its answer.
SELECT retention_protect('requests', '{platform_id, request_id, method, payload_hash,'
                                     ' created_at}');

-- Vouchers (0015): issued once, never changed. Their own triggers of 0015 give way to the
-- one rule of every record table.
DROP TRIGGER vouchers_no_update_delete ON vouchers;
DROP TRIGGER vouchers_no_truncate ON vouchers;
DROP FUNCTION vouchers_append_only();
SELECT retention_protect('vouchers');
