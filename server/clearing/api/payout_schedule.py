"""SetPayoutSchedule: validation, the idempotent write and the response (the PayoutServicer
delegates to `set_payout_schedule`). Cycles and run times: `clearing.payout.calendar`."""

from __future__ import annotations

from clearing import audit, idempotency
from clearing.api import validate
from clearing.api.convert import timestamp
from clearing.api.replies import encode
from clearing.errors import FailedPrecondition, NotFound, Violations
from clearing.ledger.model import Principal
from clearing.limits import DEFAULT_TIME_ZONE
from clearing.payout import schedule as schedules
from clearing.payout.calendar import NoBusinessDay, PayoutCycle, ScheduleSpec
from clearing.payout.service import PayoutDeps, check_payable
from clearing.v1 import payout_pb2 as pb
from clearing.reasons import Reason

METHOD = "SetPayoutSchedule"


def validate_request(request: pb.SetPayoutScheduleRequest) -> tuple[ScheduleSpec, int]:
    """The schedule asked for, and its minimum; INVALID_ARGUMENT with every field path."""
    v = Violations()
    validate.request_id(v, request.request_id)
    s = request.schedule
    validate.object_id(v, s.account_id, "schedule.account_id")
    validate.enum(v, s.cycle, PayoutCycle, "schedule.cycle")
    if s.cycle == PayoutCycle.WEEKLY:
        if not 1 <= s.weekday <= 7:
            v.add("schedule.weekday", "required for WEEKLY: 1 (Monday) to 7 (Sunday)")
    elif s.weekday:
        v.add("schedule.weekday", "only for WEEKLY; must be 0")
    if s.cycle == PayoutCycle.MONTHLY:
        if not 1 <= s.month_day <= 31:
            v.add("schedule.month_day", "required for MONTHLY: 1 to 31")
    elif s.month_day:
        v.add("schedule.month_day", "only for MONTHLY; must be 0")
    validate.amount_or_zero(v, s.min_amount_minor, "schedule.min_amount_minor")
    zone = validate.time_zone(v, s.time_zone, "schedule.time_zone", default=DEFAULT_TIME_ZONE)
    v.raise_if_any()
    return ScheduleSpec(PayoutCycle(s.cycle), s.weekday, s.month_day, zone), s.min_amount_minor


_SQL_ACCOUNT = """
SELECT account_id, kind, status FROM accounts WHERE account_id = $1 AND platform_id = $2
"""


async def set_payout_schedule(deps: PayoutDeps, request: pb.SetPayoutScheduleRequest,
                              who: Principal) -> pb.SetPayoutScheduleResponse:
    """Set (replace) a sub-account's payout schedule once per request id; the first run is
    the cycle's next run after now. Errors: INVALID_ARGUMENT (field paths under
    `schedule.`), NOT_FOUND (ACCOUNT_NOT_FOUND: not an account of the caller's platform),
    FAILED_PRECONDITION (ACCOUNT_KIND_NOT_PAYABLE for a custodial account, ACCOUNT_CLOSED)."""
    spec, min_amount = validate_request(request)
    account_id = request.schedule.account_id
    settings = deps.settings.scheduler

    async def op(conn) -> bytes:
        acct = await conn.fetchrow(_SQL_ACCOUNT, account_id, who.platform_id)
        if acct is None:
            raise NotFound(f"account {account_id} not found",
                           reason=Reason.ACCOUNT_NOT_FOUND,
                           metadata={"field": "schedule.account_id"})
        check_payable(acct, frozen_ok=True)
        now = deps.clock.now()
        calendar = await schedules.load_calendar(conn, now.date())
        try:
            await schedules.save_schedule(
                conn, platform_id=who.platform_id, account_id=account_id, spec=spec,
                min_amount_minor=min_amount, now=now, calendar=calendar,
                run_hour=settings.run_hour, actor=audit.Actor.of(who))
        except NoBusinessDay as exc:
            raise FailedPrecondition(f"the business-day calendar is invalid: {exc}",
                                     reason=Reason.CALENDAR_NO_BUSINESS_DAY) from exc
        saved = await schedules.get_schedule(conn, who.platform_id, account_id)
        return encode(pb.SetPayoutScheduleResponse(schedule=schedule_pb(saved)))

    return pb.SetPayoutScheduleResponse.FromString(await idempotency.run(
        deps.pool, who.platform_id, request.request_id, METHOD,
        validate.payload_hash(METHOD, request), op))


def schedule_pb(s: schedules.Schedule) -> pb.PayoutSchedule:
    """The schedule as the API shows it: next_run_time unset for MANUAL and D0."""
    shown = s.next_run_at if s.cycle not in (PayoutCycle.MANUAL, PayoutCycle.D0) else None
    return pb.PayoutSchedule(
        account_id=s.account_id, cycle=int(s.cycle), weekday=s.weekday,
        month_day=s.month_day, min_amount_minor=s.min_amount_minor,
        currency_code=s.currency_code, time_zone=s.time_zone,
        next_run_time=None if shown is None else timestamp(shown),
        update_time=timestamp(s.updated_at))
