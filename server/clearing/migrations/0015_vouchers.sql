-- Vouchers (issue 12): one per split, per action on a split and per finished payout, issued
-- at the first GetVoucher of its subject (clearing/reports/vouchers.py). `content` is the
-- canonical JSON the PDF is rendered from (keys sorted, no spaces, UTF-8; amounts in minor
-- units), `digest` its SHA-256, `pdf_sha256` the SHA-256 of the PDF file as issued (the
-- renderer is deterministic: the same content gives the same bytes). Kind numbers equal
-- proto VoucherKind. An action's voucher references its split's voucher.
-- Append-only: a voucher's content never changes once issued, so UPDATE, DELETE and
-- TRUNCATE are refused by triggers (a superuser who disables them is caught by
-- VerifyVoucher: the content no longer hashes to its digest, or the file to pdf_sha256).
CREATE TABLE vouchers (
    voucher_id             bigserial PRIMARY KEY,
    platform_id            bigint NOT NULL REFERENCES platforms,
    kind                   smallint NOT NULL CHECK (kind BETWEEN 1 AND 3),
    subject_id             bigint NOT NULL,
    references_voucher_id  bigint REFERENCES vouchers,
    content                text NOT NULL,
    digest                 bytea NOT NULL CHECK (length(digest) = 32),
    pdf_sha256             bytea NOT NULL CHECK (length(pdf_sha256) = 32),
    issued_at              timestamptz NOT NULL,
    UNIQUE (platform_id, kind, subject_id)
);

CREATE FUNCTION vouchers_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'vouchers are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER vouchers_no_update_delete BEFORE UPDATE OR DELETE ON vouchers
    FOR EACH ROW EXECUTE FUNCTION vouchers_append_only();
CREATE TRIGGER vouchers_no_truncate BEFORE TRUNCATE ON vouchers
    FOR EACH STATEMENT EXECUTE FUNCTION vouchers_append_only();
