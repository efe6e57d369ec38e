"""Validation of SplitService requests: every problem of a request, with its field path
(INVALID_ARGUMENT, reason INVALID_ARGUMENT or the one given), before the split domain sees
it."""

from __future__ import annotations

import datetime as dt
import re

from clearing.api import validate
from clearing.clock import Clock
from clearing.errors import AlreadyExists, ClearingError, Violations
from clearing.limits import (ACTION_REASON_LEN_MAX, ACTIVATION_COMMENT_LEN_MAX, CHANNEL_LEN_MAX,
                             CHANNEL_TRANSACTION_ID_LEN_MAX, COUNTER_OVERRIDES_MAX,
                             COUPON_ID_LEN_MAX, EVENT_TIME_AHEAD_S_MAX, EXTERNAL_REF_LEN_MAX,
                             NAME_LEN_MAX, ORDER_AMOUNT_MINOR_MAX, ORDER_ATTRIBUTES_MAX,
                             ORDER_COUPONS_MAX, ORDER_ID_LEN_MAX, ORDER_MEMO_LEN_MAX,
                             ORDER_PARTIES_MAX, ORDER_TAGS_MAX, PAID_TIME_AHEAD_S_MAX,
                             PAID_TIME_MIN, REFUND_REASON_LEN_MAX, REFUND_REF_LEN_MAX,
                             RELEASE_ACCOUNTS_MAX, SPLIT_BATCH_SIZE_MAX, TAG_LEN_MAX,
                             VALUE_LEN_MAX)
from clearing.money import BPS_ONE, is_currency
from clearing.reasons import Reason
from clearing.rules.validate import NAME_RE
from clearing.splits.model import SplitStatus
from clearing.splits.store import SplitFilter
from clearing.v1 import split_pb2 as pb

EVENT_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
SHA256_HEX_LEN = 64


def batch_violations(request: pb.SplitBatchRequest) -> Violations:
    v = Violations()
    validate.request_id(v, request.request_id)
    if not request.requests:
        v.add("requests", f"required: 1 to {SPLIT_BATCH_SIZE_MAX} orders")
    elif len(request.requests) > SPLIT_BATCH_SIZE_MAX:
        v.add("requests", f"more than {SPLIT_BATCH_SIZE_MAX} orders")
    return v


def batch_duplicates(requests) -> dict[int, ClearingError]:
    """Items repeating an earlier item's request id or order id: refused, the first goes on."""
    request_ids: set[str] = set()
    order_ids: set[str] = set()
    refused: dict[int, ClearingError] = {}
    for i, item in enumerate(requests):
        rid, oid = item.request_id, item.order.order_id
        if rid and rid in request_ids:
            refused[i] = AlreadyExists(f"request_id {rid!r} is repeated in the batch",
                                       reason=Reason.REQUEST_ID_REUSED,
                                       metadata={"request_id": rid})
        elif oid and oid in order_ids:
            refused[i] = AlreadyExists(f"order {oid!r} is repeated in the batch",
                                       reason=Reason.ORDER_ALREADY_SPLIT,
                                       metadata={"order_id": oid})
        request_ids.add(rid)
        order_ids.add(oid)
    return refused


def rule_set_name(v: Violations, value: str, field: str, *, required: bool) -> None:
    if required and not value:
        v.add(field, "required")
    elif value and NAME_RE.fullmatch(value) is None:
        v.add(field, "1 to 64 characters: lower-case letters, digits, '_' and '-'")


def activate_violations(request: pb.ActivateRuleSetRequest) -> Violations:
    v = Violations()
    validate.request_id(v, request.request_id)
    rule_set_name(v, request.rule_set_name, "rule_set_name", required=True)
    validate.version(v, request.rule_set_version, "rule_set_version")
    sha = request.content_sha256
    if sha and (len(sha) != SHA256_HEX_LEN or sha.strip("0123456789abcdef")):
        v.add("content_sha256", "must be 64 lower-case hex digits")
    if request.HasField("expected_active_version"):
        validate.version(v, request.expected_active_version, "expected_active_version",
                         zero="none active")
    validate.text(v, request.comment, "comment", length_max=ACTIVATION_COMMENT_LEN_MAX)
    return v


def order_violations(v: Violations, order: pb.Order, clock: Clock) -> None:
    """Every problem of an order, with `order.` field paths."""
    validate.text(v, order.order_id, "order.order_id", length_max=ORDER_ID_LEN_MAX,
                  required=True)
    if order.order_id and not order.order_id.isprintable():
        v.add("order.order_id", "must be printable characters")
    if not 1 <= order.amount_minor <= ORDER_AMOUNT_MINOR_MAX:
        v.add("order.amount_minor", f"must be 1 to {ORDER_AMOUNT_MINOR_MAX} minor units")
    elif not 0 <= order.channel_fee_minor <= order.amount_minor:
        v.add("order.channel_fee_minor", "must be 0 to the order's amount_minor")
    if not is_currency(order.currency_code):
        v.add("order.currency_code", "required: an ISO 4217 code such as CNY")
    validate.text(v, order.channel, "order.channel", length_max=CHANNEL_LEN_MAX, required=True)
    validate.text(v, order.channel_transaction_id, "order.channel_transaction_id",
                  length_max=CHANNEL_TRANSACTION_ID_LEN_MAX)
    validate.text(v, order.memo, "order.memo", length_max=ORDER_MEMO_LEN_MAX)
    rule_set_name(v, order.rule_set_name, "order.rule_set_name", required=False)
    order_collections(v, order)
    paid = validate.timestamp(v, order, "paid_time", "order.paid_time")
    if paid is not None and (paid - clock.now()).total_seconds() > PAID_TIME_AHEAD_S_MAX:
        v.add("order.paid_time", f"more than {PAID_TIME_AHEAD_S_MAX} s in the future")
    elif paid is not None and paid < PAID_TIME_MIN:
        v.add("order.paid_time", f"before {PAID_TIME_MIN:%Y-%m-%dT%H:%M:%SZ}")


def _fine(value: str, length_max: int) -> bool:
    """A required text `validate.text` finds nothing wrong with; the field path of a
    collection's item is only formatted for an item that has a problem (every Split)."""
    return bool(value) and len(value) <= length_max and "\0" not in value


def order_collections(v: Violations, order: pb.Order) -> None:
    tags = order.tags
    if len(tags) > ORDER_TAGS_MAX:
        v.add("order.tags", f"more than {ORDER_TAGS_MAX} tags")
    for i, tag in enumerate(tags):
        if not _fine(tag, TAG_LEN_MAX):
            validate.text(v, tag, f"order.tags[{i}]", length_max=TAG_LEN_MAX, required=True)
    attributes = order.attributes
    if len(attributes) > ORDER_ATTRIBUTES_MAX:
        v.add("order.attributes", f"more than {ORDER_ATTRIBUTES_MAX} attributes")
    for key, value in attributes.items():
        if not _fine(key, NAME_LEN_MAX):
            validate.text(v, key, f"order.attributes[{key}]", length_max=NAME_LEN_MAX,
                          required=True)
        if value and not _fine(value, VALUE_LEN_MAX):
            validate.text(v, value, f"order.attributes[{key}]", length_max=VALUE_LEN_MAX)
    parties = order.parties
    if len(parties) > ORDER_PARTIES_MAX:
        v.add("order.parties", f"more than {ORDER_PARTIES_MAX} parties")
    for role, ref in parties.items():
        if not _fine(ref, EXTERNAL_REF_LEN_MAX):
            validate.text(v, ref, f"order.parties[{role}]", length_max=EXTERNAL_REF_LEN_MAX,
                          required=True)
    coupons = order.coupons
    if not coupons:
        return
    if len(coupons) > ORDER_COUPONS_MAX:
        v.add("order.coupons", f"more than {ORDER_COUPONS_MAX} coupons")
    elif (all(0 < c.amount_minor <= ORDER_AMOUNT_MINOR_MAX for c in coupons)
          and sum(c.amount_minor for c in coupons) > ORDER_AMOUNT_MINOR_MAX):
        v.add("order.coupons", f"add up to more than {ORDER_AMOUNT_MINOR_MAX} minor units")
    for i, coupon in enumerate(coupons):
        if not 1 <= coupon.amount_minor <= ORDER_AMOUNT_MINOR_MAX:
            v.add(f"order.coupons[{i}].amount_minor",
                  f"must be 1 to {ORDER_AMOUNT_MINOR_MAX} minor units")
        if coupon.funding not in (pb.COUPON_FUNDING_PLATFORM, pb.COUPON_FUNDING_SELLER):
            v.add(f"order.coupons[{i}].funding", "required: PLATFORM or SELLER")
        validate.text(v, coupon.coupon_id, f"order.coupons[{i}].coupon_id",
                      length_max=COUPON_ID_LEN_MAX)


def release_violations(request: pb.ReleaseSplitRequest, now: dt.datetime) -> Violations:
    v = _action_violations(request)
    which = request.WhichOneof("release")
    if which is None:
        v.add("event_name", "set exactly one of event_name and fraction_bps")
    elif which == "event_name" and EVENT_NAME_RE.fullmatch(request.event_name) is None:
        v.add("event_name", "1 to 32 characters, UPPER_SNAKE (e.g. SHIPPED)")
    elif which == "fraction_bps" and not 1 <= request.fraction_bps <= BPS_ONE:
        v.add("fraction_bps", f"must be 1 to {BPS_ONE} basis points")
    if len(request.account_ids) > RELEASE_ACCOUNTS_MAX:
        v.add("account_ids", f"more than {RELEASE_ACCOUNTS_MAX} accounts")
    for i, account_id in enumerate(request.account_ids):
        validate.object_id(v, account_id, f"account_ids[{i}]")
    validate.text(v, request.reason, "reason", length_max=ACTION_REASON_LEN_MAX)
    event_time = validate.timestamp(v, request, "event_time")
    if event_time is not None and (event_time - now).total_seconds() > EVENT_TIME_AHEAD_S_MAX:
        v.add("event_time", f"more than {EVENT_TIME_AHEAD_S_MAX} s in the future")
    return v


def cancel_violations(request: pb.CancelSplitRequest) -> Violations:
    v = _action_violations(request)
    validate.text(v, request.reason, "reason", length_max=ACTION_REASON_LEN_MAX,
                  required=True)
    return v


def _action_violations(request) -> Violations:
    v = Violations()
    validate.request_id(v, request.request_id)
    validate.text(v, request.order_id, "order_id", length_max=ORDER_ID_LEN_MAX, required=True)
    return v


def refund_violations(request: pb.RefundSplitRequest) -> Violations:
    v = Violations()
    validate.request_id(v, request.request_id)
    validate.text(v, request.order_id, "order_id", length_max=ORDER_ID_LEN_MAX, required=True)
    validate.amount(v, request.amount_minor)
    validate.currency(v, request.currency_code)
    validate.text(v, request.refund_ref, "refund_ref", length_max=REFUND_REF_LEN_MAX)
    validate.text(v, request.reason, "reason", length_max=REFUND_REASON_LEN_MAX, required=True)
    validate.text(v, request.shortfall_account_ref, "shortfall_account_ref",
                  length_max=EXTERNAL_REF_LEN_MAX)
    return v


def split_request_error(request: pb.SplitRequest, clock: Clock) -> ClearingError | None:
    """What validation answers for one order of a group (None: valid)."""
    v = Violations()
    validate.request_id(v, request.request_id)
    order_violations(v, request.order, clock)
    try:
        v.raise_if_any()
    except ClearingError as exc:
        return exc
    return None


def preview_violations(request: pb.PreviewSplitRequest, clock: Clock) -> Violations:
    v = Violations()
    order_violations(v, request.order, clock)
    validate.version(v, request.rule_set_version, "rule_set_version",
                     zero="the active version")
    if len(request.counter_overrides) > COUNTER_OVERRIDES_MAX:
        v.add("counter_overrides", f"more than {COUNTER_OVERRIDES_MAX}")
    for name, value in request.counter_overrides.items():
        if value < 0:
            v.add(f"counter_overrides[{name}]", "must not be negative")
    return v


def get_split_violations(request: pb.GetSplitRequest) -> Violations:
    v = Violations()
    if bool(request.order_id) == bool(request.split_id):
        v.add("order_id", "set exactly one of order_id and split_id")
    validate.text(v, request.order_id, "order_id", length_max=ORDER_ID_LEN_MAX)
    validate.object_id(v, request.split_id, "split_id", required=False)
    return v


_STORED_STATES = frozenset({SplitStatus.POSTED, SplitStatus.HOLDING, SplitStatus.CANCELLED,
                            SplitStatus.PARTLY_REFUNDED, SplitStatus.REFUNDED})


def _ns(v: Violations, request: pb.ListSplitsRequest, name: str) -> int | None:
    """A valid Timestamp field as nanoseconds, clamped to int64 (paid times are int64)."""
    if validate.timestamp(v, request, name) is None:
        return None
    ts = getattr(request, name)
    return max(-(2**63), min(2**63 - 1, ts.seconds * 10**9 + ts.nanos))


def list_splits_filter(request: pb.ListSplitsRequest) -> tuple[Violations, SplitFilter]:
    """The violations of a ListSplits request and its filters."""
    v = Violations()
    validate.page_size(v, request.page_size)
    status = None
    if request.state:
        if request.state in {int(s) for s in _STORED_STATES}:
            status = SplitStatus(request.state)
        else:
            v.add("state", f"unknown value {request.state}: POSTED to REFUNDED, or unset")
    start = _ns(v, request, "paid_time_start")
    end = _ns(v, request, "paid_time_end")
    if start is not None and end is not None and end <= start:
        v.add("paid_time_end", "must be after paid_time_start")
    validate.object_id(v, request.account_id, "account_id", required=False)
    validate.amount_or_zero(v, request.amount_min_minor, "amount_min_minor")
    validate.amount_or_zero(v, request.amount_max_minor, "amount_max_minor")
    if 0 < request.amount_max_minor < request.amount_min_minor:
        v.add("amount_max_minor", "must not be below amount_min_minor")
    validate.currency(v, request.currency_code, required=False)
    return v, SplitFilter(status=status, paid_start_ns=start, paid_end_ns=end,
                          account_id=request.account_id or None,
                          amount_min=request.amount_min_minor or None,
                          amount_max=request.amount_max_minor or None,
                          currency_code=request.currency_code)
