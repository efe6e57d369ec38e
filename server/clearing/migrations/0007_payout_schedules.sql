-- Payout schedules: when the scheduler sweeps a sub-account's available balance into a
-- payout (clearing.payout.schedule), and the business-day calendar it uses.

-- Exceptions to "Monday to Friday are business days": a holiday on a weekday
-- (business = false) or a make-up working day on a weekend (business = true, as China moves
-- weekends around its holidays). One calendar for every platform; days are local dates of
-- each schedule's time zone. Set with `clearing calendar set DAY --holiday|--workday`.
CREATE TABLE calendar_days (
    day         date PRIMARY KEY,
    business    boolean NOT NULL,
    note        text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One schedule per sub-account. cycle is the proto PayoutCycle number. next_run_at is when
-- the next sweep is due (NULL: MANUAL, never); for D0 it is only "not before" (the account
-- is swept at every tick once its available balance reaches the minimum). The scheduler
-- claims due rows with FOR UPDATE SKIP LOCKED, so each run happens in one process.
CREATE TABLE payout_schedules (
    account_id        bigint PRIMARY KEY REFERENCES accounts,
    platform_id       bigint NOT NULL REFERENCES platforms,
    cycle             smallint NOT NULL CHECK (cycle BETWEEN 1 AND 5),      -- PayoutCycle
    weekday           smallint NOT NULL DEFAULT 0 CHECK (weekday BETWEEN 0 AND 7),
    month_day         smallint NOT NULL DEFAULT 0 CHECK (month_day BETWEEN 0 AND 31),
    min_amount_minor  bigint NOT NULL DEFAULT 0 CHECK (min_amount_minor >= 0),
    time_zone         text NOT NULL DEFAULT 'Asia/Shanghai',
    next_run_at       timestamptz,
    last_run_at       timestamptz,                 -- when the last due run was processed
    last_payout_id    bigint,                      -- the payout the last sweep made, if any
    last_error        text NOT NULL DEFAULT '',    -- UPPER_SNAKE reason the last run refused
    updated_at        timestamptz NOT NULL,
    CHECK ((cycle = 3) = (weekday <> 0)),
    CHECK ((cycle = 4) = (month_day <> 0)),
    CHECK ((cycle = 5) = (next_run_at IS NULL))
);
CREATE INDEX payout_schedules_due_idx ON payout_schedules (next_run_at)
    WHERE next_run_at IS NOT NULL;
