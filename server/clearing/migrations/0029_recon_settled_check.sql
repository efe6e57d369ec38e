-- A channel statement's line (a payment, 1, or a refund, 2: recon.model.LineType) settles
-- its amount less the channel's fee: both import paths refuse a line otherwise
-- (recon/canonical.py, recon/fast_import.py), and the match's totals rely on it (a MATCHED
-- line's difference is 0; recon/match.py). The database keeps it too. A bank file's payout
-- line (3) states what the bank paid instead (recon/payout_file.py).
-- NOT VALID: enforced on every new line; existing lines (all imported through those checks)
-- are not rescanned.
ALTER TABLE recon_statement_lines ADD CONSTRAINT recon_statement_lines_settled
    CHECK (line_type NOT IN (1, 2) OR settled_minor = amount_minor - channel_fee_minor)
    NOT VALID;
