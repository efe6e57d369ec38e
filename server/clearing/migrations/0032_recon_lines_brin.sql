-- Statement lines are written once, by the import of their statement (one COPY in one
-- transaction, numbered by the importer from the header's 1), never updated or deleted
-- (retention), and read by statement, whole: the match, the payout match, the reports.
-- Their primary key (statement_id, line_number) cost about 1.5 s of PostgreSQL's 4.2 s of
-- CPU to COPY a day's 2,000,000 lines (35%; `make bench-recon`, bench/README.md), for an
-- index no query looks a line up by. A BRIN index on statement_id (a statement's lines lie
-- together in the heap) finds a statement's pages for 0.3 to 0.6 s of that COPY instead.
-- (statement_id, line_number) stays unique by construction: nothing else writes lines.
-- A BRIN index answers every page range it has not summarised yet as a candidate, so every
-- read of a statement would read every line written since the last summary: the import
-- summarises the new ranges itself before its match (recon/match.py, SQL_BEFORE_MATCH:
-- brin_summarize_new_values), and autosummarize asks autovacuum to as well where it runs.
ALTER TABLE recon_statement_lines DROP CONSTRAINT recon_statement_lines_pkey;
CREATE INDEX recon_statement_lines_statement_brin ON recon_statement_lines
    USING brin (statement_id) WITH (autosummarize = on);
