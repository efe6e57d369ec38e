"""The console's request and response helpers, beside its pages (app.py): reading a
request's query and forms (a bad value refused as Refused, shown like an API error),
formatting values for the pages, redirects and PDF downloads, and the security headers
of every response."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from clearing.limits import CONSOLE_FIELD_LEN_MAX, DEFAULT_TIME_ZONE
from clearing.money import format_minor
from clearing_client.v1 import report_pb2, split_pb2



class Refused(Exception):
    """A console-side refusal of a request (a bad form), shown like an API error."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _enum_name(enum, value: int, prefix: str) -> str:
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return str(value)


def _money(amount: int, currency: str) -> str:
    try:
        return f"{format_minor(amount, currency)} {currency}"
    except (KeyError, ValueError):
        return f"{amount} (minor) {currency}"


def _ts(ts) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    return ts.ToDatetime(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _as_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _int(request: Request, name: str, *, form: dict | None = None, required: bool = False,
         low: int = 0) -> int:
    raw = ((form or {}).get(name) if form is not None else request.query_params.get(name))
    raw = (raw or "").strip()
    if not raw:
        if required:
            raise Refused(400, "required", name)
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise Refused(400, "not a whole number", name) from None
    if not low <= value < 2**63:
        raise Refused(400, f"must be at least {low}", name)
    return value


def _text(source: Any, name: str, *, required: bool = False) -> str:
    value = str(source.get(name) or "").strip()
    if len(value) > CONSOLE_FIELD_LEN_MAX:
        raise Refused(400, f"at most {CONSOLE_FIELD_LEN_MAX} characters", name)
    if required and not value:
        raise Refused(400, "required", name)
    return value


def _event_link(e) -> str:
    """The console page of an event's resource ("" if it has none)."""
    case = e.WhichOneof("resource")
    if case == "split":
        return f"/splits/{e.split.split_id}"
    if case == "payout":
        return f"/payouts/{e.payout.payout_id}"
    if case == "account":
        return f"/accounts/{e.account.account_id}"
    if case == "risk_event":
        return f"/risk/{e.risk_event.event_id}"
    if case == "rule_set":
        return f"/rules/{e.rule_set.name}/{e.rule_set.version}"
    return ""


def _token(request: Request) -> str:
    token = request.query_params.get("page_token", "")
    if len(token) > CONSOLE_FIELD_LEN_MAX:
        raise Refused(400, "too long", "page_token")
    return token


def _amount(form, name: str, currency: str) -> int:
    from clearing.cli.common import parse_minor

    text = _text(form, name, required=True)
    try:
        amount = parse_minor(text, currency)
    except ValueError as exc:
        raise Refused(400, str(exc), name) from None
    if amount <= 0:
        raise Refused(400, "must be positive", name)
    return amount


@dataclass
class _SplitSearch:
    """The Splits page's search: ListSplits keyword arguments and the form's values (for
    the form and the next-page link)."""

    filters: dict
    params: dict


_SPLIT_SEARCH_FIELDS = ("state", "from", "to", "account_id", "min_amount", "max_amount",
                        "currency")


def _split_search(request: Request) -> _SplitSearch:
    """The search of the Splits page from its query: a state, paid dates (YYYY-MM-DD, both
    included, in the platform's time zone), an account id, amounts in major units (of the
    currency given, else CNY), a currency."""
    from zoneinfo import ZoneInfo

    from clearing.cli.common import parse_minor
    from clearing.money import is_currency

    q = request.query_params
    params = {name: _text(q, name) for name in _SPLIT_SEARCH_FIELDS}
    filters: dict[str, Any] = {}
    if params["state"]:
        try:
            filters["state"] = split_pb2.SplitStatus.Value(
                "SPLIT_STATUS_" + params["state"].upper())
        except ValueError:
            raise Refused(400, "not a split state", "state") from None
    currency = params["currency"].upper()
    if currency:
        if not is_currency(currency):
            raise Refused(400, "not an ISO 4217 currency code", "currency")
        filters["currency_code"] = params["currency"] = currency
    zone = ZoneInfo(DEFAULT_TIME_ZONE)
    for name, key, days in (("from", "paid_time_start", 0), ("to", "paid_time_end", 1)):
        if params[name]:
            try:
                day = dt.date.fromisoformat(params[name])
            except ValueError:
                raise Refused(400, "not a date YYYY-MM-DD", name) from None
            filters[key] = dt.datetime.combine(day + dt.timedelta(days=days), dt.time(0),
                                               zone)
    if "paid_time_start" in filters and "paid_time_end" in filters and (
            filters["paid_time_end"] <= filters["paid_time_start"]):
        raise Refused(400, "must not be before the start date", "to")
    filters["account_id"] = _int(request, "account_id", low=1)
    for name, key in (("min_amount", "amount_min_minor"), ("max_amount", "amount_max_minor")):
        if params[name]:
            try:
                filters[key] = parse_minor(params[name], currency or "CNY")
            except ValueError as exc:
                raise Refused(400, str(exc), name) from None
            if filters[key] <= 0:
                raise Refused(400, "must be positive", name)
    return _SplitSearch(filters, params)


def _back(path: str, done: str) -> Response:
    return RedirectResponse(f"{path}?{urlencode({'done': done})}", status_code=303)


def _pdf(response: report_pb2.GetVoucherResponse) -> Response:
    name = f"voucher-{response.voucher.voucher_id}.pdf"
    return Response(response.pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


def _rule_set_text(rule_set) -> str:
    """A rule-set version as YAML (from its proto, as the API returns it)."""
    import yaml

    doc = _as_dict(rule_set)
    for key in ("rule_set_id", "version", "status", "content_sha256", "create_time",
                "publish_time", "activate_time", "supersede_time", "published_by",
                "activated_by", "level_count"):
        doc.pop(key, None)
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


SECURITY_HEADERS = (
    (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"frame-ancestors 'none'; form-action 'self'"),
)


class SecurityHeaders:
    """Adds the headers of SECURITY_HEADERS to every response (no framing, no sniffing, no
    script or style from elsewhere, no referrer beyond the console)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()),
                                                  *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
