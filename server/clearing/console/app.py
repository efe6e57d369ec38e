"""The console's web app: routes, sign-in and sessions, CSRF, and the pages.

Every page calls the API with the session's key (ClearingClient on one shared channel,
one attempt per call: a failure is shown as it happened, with its status, reason and
field violations). The key is taken from the sign-in form only: it is never in a URL, a
page, a cookie (the cookie is an opaque session id) or a log line (this module logs
paths and outcomes, never forms or metadata)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from clearing.console import exports, rule_pages
from clearing.console.overview import figures
from clearing.console.sessions import Session, SessionStore
from clearing.console.web import (Refused, SecurityHeaders, _amount, _as_dict, _back,
                                  _enum_name, _event_link, _int, _money, _pdf,
                                  _split_search, _text, _token, _ts)
from clearing.events.model import EventType
from clearing.limits import DEFAULT_TIME_ZONE
from clearing.limits import (CONSOLE_COUNT_MAX, CONSOLE_FIELD_LEN_MAX, CONSOLE_PAGE_SIZE,
                             CONSOLE_EXPORT_ROWS_MAX, CONSOLE_TOP_RECEIVERS, INT64_MAX)
from clearing_client import ClearingClient, ClearingRpcError
from clearing_client.v1 import ledger_pb2, payout_pb2, reconciliation_pb2 as rpb
from clearing_client.v1 import risk_pb2, rule_set_pb2, split_pb2

log = logging.getLogger("clearing.console")
HERE = Path(__file__).parent
SESSION_COOKIE = "clearing_console_session"
SIGNIN_CSRF_COOKIE = "clearing_console_signin"
# HTTP status of a page showing an API error, by gRPC status.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.ABORTED: 409, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
NAV = (("/", "Overview"), ("/splits", "Splits"), ("/accounts", "Accounts"),
       ("/payouts", "Payouts"), ("/recon", "Reconciliation"), ("/risk", "Risk"),
       ("/rules", "Rule sets"), ("/events", "Events"))


@dataclass(frozen=True)
class ConsoleConfig:
    """What the app needs: the API's address and TLS credentials (None: plaintext), the
    session lifetimes, whether the console itself serves HTTPS (the cookie's Secure),
    and each call's deadline."""

    target: str
    credentials: grpc.ChannelCredentials | None
    session_s: float = 1800.0
    session_max_s: float = 43_200.0
    secure_cookie: bool = False
    call_timeout_s: float = 10.0


def create_app(config: ConsoleConfig) -> Starlette:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                             autoescape=True)
    templates = Jinja2Templates(env=env)
    env.globals["nav"] = NAV
    env.filters["money"] = lambda amount, currency: _money(int(amount), currency)
    env.filters["ts"] = _ts
    env.globals["enum_name"] = _enum_name
    env.globals["pb"] = {"ledger": ledger_pb2, "payout": payout_pb2, "recon": rpb,
                         "risk": risk_pb2, "split": split_pb2,
                         "rule_set": rule_set_pb2}
    sessions = SessionStore(config.session_s, config.session_max_s)
    state: dict[str, grpc.aio.Channel] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        state["channel"] = (grpc.aio.secure_channel(config.target, config.credentials)
                            if config.credentials is not None
                            else grpc.aio.insecure_channel(config.target))
        try:
            yield
        finally:
            await state.pop("channel").close()

    def client(session: Session) -> ClearingClient:
        return ClearingClient(config.target, session.api_key, channel=state["channel"],
                              timeout_s=config.call_timeout_s, attempts_max=1)

    def page(request: Request, template: str, session: Session | None, status: int = 200,
             **context) -> Response:
        context.setdefault("notice", request.query_params.get("done", "")[:200])
        response = templates.TemplateResponse(
            request, template, {"session": session, "csrf": session.csrf if session else "",
                            "path": request.url.path, **context}, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        return response

    def error_page(request: Request, session: Session | None, err: Exception) -> Response:
        # after a refused action, back to the page it was made from (its path's parent)
        back = request.url.path.rsplit("/", 1)[0] if request.method == "POST" else ""
        if isinstance(err, ClearingRpcError):
            if err.code == grpc.StatusCode.UNAUTHENTICATED and session is not None:
                sessions.drop(session.session_id)  # the key was revoked: sign in again
                return _to_signin(request, "Your API key is no longer accepted: sign in again.")
            status = HTTP_STATUS.get(err.code, 502)
            return page(request, "error.html", session, status, back=back, code=err.code.name,
                        error_reason=err.reason, message=err.message,
                        violations=[(v.field, v.description) for v in err.violations])
        assert isinstance(err, Refused)
        return page(request, "error.html", session, err.status, back=back, code="INVALID_INPUT",
                    error_reason="", message="The form was refused by the console.",
                    violations=[(err.field, err.message)] if err.field else [])

    def _to_signin(request: Request, why: str = "") -> Response:
        response = RedirectResponse("/signin" + (f"?{urlencode({'why': why})}" if why else ""),
                                    status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def _same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin is None
        host = request.headers.get("host", "")
        return origin.split("://", 1)[-1] == host

    def view(handler, *, post: bool = False):
        """A page behind sign-in: the session from the cookie (else to /signin), and for a
        POST the same origin and the session's CSRF token, checked before anything runs."""

        async def endpoint(request: Request) -> Response:
            session = sessions.get(request.cookies.get(SESSION_COOKIE))
            if session is None:
                if post:
                    return Response("session expired: sign in again", status_code=403)
                return _to_signin(request, "Sign in to continue."
                                  if request.cookies.get(SESSION_COOKIE) else "")
            if any(isinstance(v, int) and not 0 < v <= INT64_MAX
                   for v in request.path_params.values()):
                return page(request, "error.html", session, 404, code="NOT_FOUND",
                            error_reason="", message="No such id.", violations=[])
            form = None
            if post:
                if not _same_origin(request):
                    log.warning("console: cross-origin POST %s refused", request.url.path)
                    return Response("cross-origin request refused", status_code=403)
                form = await request.form()
                if not session.csrf_ok(str(form.get("csrf") or "")):
                    log.warning("console: POST %s without a valid CSRF token refused",
                                request.url.path)
                    return Response("CSRF token missing or wrong: reload the page",
                                    status_code=403)
            try:
                return await handler(request, session, client(session), form)
            except (ClearingRpcError, Refused) as err:
                log.info("console: %s %s -> %s", request.method, request.url.path,
                         getattr(err, "code", None) and err.code.name or "refused")
                return error_page(request, session, err)

        return endpoint

    # ---- sign-in -----------------------------------------------------------------------

    async def signin_form(request: Request) -> Response:
        if sessions.get(request.cookies.get(SESSION_COOKIE)):
            return RedirectResponse("/", status_code=303)
        token = secrets.token_urlsafe(32)
        response = page(request, "signin.html", None, why=request.query_params.get("why", "")[:200],
                        signin_csrf=token)
        response.set_cookie(SIGNIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                            secure=config.secure_cookie, path="/signin", max_age=3600)
        return response

    async def signin(request: Request) -> Response:
        form = await request.form()
        cookie = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
        sent = str(form.get("csrf") or "")
        if (not _same_origin(request) or not cookie or not sent
                or not secrets.compare_digest(cookie.encode(), sent.encode())):
            log.warning("console: sign-in without a valid CSRF token refused")
            return Response("CSRF token missing or wrong: reload the sign-in page",
                            status_code=403)
        key = str(form.get("api_key") or "").strip()
        if not key or len(key) > CONSOLE_FIELD_LEN_MAX:
            return page(request, "signin.html", None, 400, why="Enter an API key.",
                        signin_csrf=cookie)
        probe = ClearingClient(config.target, key, channel=state["channel"],
                               timeout_s=config.call_timeout_s, attempts_max=1)
        try:
            await probe.list_accounts(page_size=1)
        except ClearingRpcError as err:
            log.info("console: sign-in refused (%s)", err.code.name)
            why = ("That API key is not accepted." if err.code in (
                grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
                else f"The API could not be reached: {err.code.name}.")
            return page(request, "signin.html", None, 401, why=why, signin_csrf=cookie)
        session = sessions.create(key)
        log.info("console: signed in (session %s...)", session.session_id[:6])
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, session.session_id, httponly=True,
                            samesite="strict", secure=config.secure_cookie, path="/")
        response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/signin")
        return response

    async def signout(request: Request, session: Session, _c, _form) -> Response:
        sessions.drop(session.session_id)
        log.info("console: signed out")
        return _to_signin(request, "Signed out.")

    # ---- overview ----------------------------------------------------------------------

    async def _count(call, items: str) -> str:
        """How many items one list page holds ("N+" when there are more pages)."""
        try:
            response = await call
        except ClearingRpcError as err:
            return f"n/a ({err.code.name})"
        n = len(getattr(response, items))
        return f"{n}+" if response.next_page_token else str(n)

    async def overview(request: Request, session: Session, c: ClearingClient, _f) -> Response:
        found = await figures(c, session.cache, config.call_timeout_s)
        payout_states = [s for s in payout_pb2.PayoutState.values() if s]
        counts = await asyncio.gather(
            *(_count(c.list_payouts(states=[s], page_size=CONSOLE_COUNT_MAX), "payouts")
              for s in payout_states),
            _count(c.list_discrepancies(states=[rpb.DISCREPANCY_STATE_OPEN],
                                        page_size=CONSOLE_COUNT_MAX), "discrepancies"),
            _count(c.call(c.risk.ListRiskEvents, risk_pb2.ListRiskEventsRequest(
                state=risk_pb2.RISK_EVENT_STATE_OPEN, page_size=CONSOLE_COUNT_MAX)), "events"))
        payouts = [(_enum_name(payout_pb2.PayoutState, s, "PAYOUT_STATE_"), n)
                   for s, n in zip(payout_states, counts)]
        return page(request, "overview.html", session, **found, payouts=payouts,
                    open_discrepancies=counts[-2], open_risk=counts[-1],
                    top_n=CONSOLE_TOP_RECEIVERS)

    # ---- splits ------------------------------------------------------------------------

    async def splits(request: Request, session: Session, c: ClearingClient, _f) -> Response:
        order_id = _text(request.query_params, "order_id")
        split_id = _int(request, "split_id", low=1)
        if order_id or split_id:
            found = await c.get_split(order_id, split_id=split_id)
            return RedirectResponse(f"/splits/{found.split_id}", status_code=303)
        search = _split_search(request)
        response = await c.list_splits(**search.filters, page_size=CONSOLE_PAGE_SIZE,
                                       page_token=_token(request))
        names = [_enum_name(split_pb2.SplitStatus, s, "SPLIT_STATUS_")
                 for s in split_pb2.SplitStatus.values()
                 if s not in (split_pb2.SPLIT_STATUS_UNSPECIFIED, split_pb2.SPLIT_STATUS_PREVIEW)]
        return page(request, "splits.html", session, splits=response.splits,
                    next_token=response.next_page_token, states=names, q=search.params,
                    link={k: v for k, v in search.params.items() if v},
                    time_zone=DEFAULT_TIME_ZONE)

    async def split_detail(request: Request, session: Session, c: ClearingClient,
                           _f) -> Response:
        split = await c.get_split(split_id=request.path_params["split_id"])
        return page(request, "split.html", session, split=split)

    async def split_voucher(request: Request, session: Session, c: ClearingClient,
                            _f) -> Response:
        return _pdf(await c.get_voucher(split_id=request.path_params["split_id"]))

    async def split_release(request: Request, session: Session, c: ClearingClient,
                            form) -> Response:
        split = await c.get_split(split_id=request.path_params["split_id"])
        event = _text(form, "event_name")
        fraction = _int(request, "fraction_bps", form=form, low=1)
        if not event and not fraction:
            raise Refused(400, "give an event name or a fraction", "event_name")
        await c.release_split(split.order_id, event_name=event or None,
                              fraction_bps=fraction if not event else None)
        return _back(f"/splits/{split.split_id}", "released")

    async def split_refund(request: Request, session: Session, c: ClearingClient,
                           form) -> Response:
        split = await c.get_split(split_id=request.path_params["split_id"])
        amount = _amount(form, "amount", split.currency_code)
        why = _text(form, "reason")
        await c.refund_split(split.order_id, amount, split.currency_code, reason=why,
                             refund_ref=_text(form, "refund_ref"))
        return _back(f"/splits/{split.split_id}", "refunded")

    # ---- accounts ----------------------------------------------------------------------

    async def accounts(request: Request, session: Session, c: ClearingClient, _f) -> Response:
        response = await c.list_accounts(page_size=CONSOLE_PAGE_SIZE,
                                         page_token=_token(request))
        return page(request, "accounts.html", session, accounts=response.accounts,
                    next_token=response.next_page_token)

    async def account_detail(request: Request, session: Session, c: ClearingClient,
                             _f) -> Response:
        account_id = request.path_params["account_id"]
        account = await c.get_account(account_id)
        balance = await c.balance(account_id)
        entries = await c.list_entries(account_id, page_size=CONSOLE_PAGE_SIZE,
                                       page_token=_token(request))
        return page(request, "account.html", session, account=account, balance=balance,
                    entries=entries.entries, next_token=entries.next_page_token,
                    export_max=CONSOLE_EXPORT_ROWS_MAX)

    # ---- payouts -----------------------------------------------------------------------

    async def payouts(request: Request, session: Session, c: ClearingClient, _f) -> Response:
        state_name = _text(request.query_params, "state").upper()
        states = []
        if state_name:
            try:
                states = [payout_pb2.PayoutState.Value("PAYOUT_STATE_" + state_name)]
            except ValueError:
                raise Refused(400, "not a payout state", "state") from None
        response = await c.list_payouts(account_id=_int(request, "account_id"), states=states,
                                        page_size=CONSOLE_PAGE_SIZE,
                                        page_token=_token(request))
        names = [_enum_name(payout_pb2.PayoutState, s, "PAYOUT_STATE_")
                 for s in payout_pb2.PayoutState.values() if s]
        return page(request, "payouts.html", session, payouts=response.payouts,
                    next_token=response.next_page_token, state=state_name, states=names,
                    account_id=request.query_params.get("account_id", ""))

    async def payout_detail(request: Request, session: Session, c: ClearingClient,
                            _f) -> Response:
        payout = await c.get_payout(request.path_params["payout_id"])
        return page(request, "payout.html", session, payout=payout)

    async def payout_review(request: Request, session: Session, c: ClearingClient,
                            form) -> Response:
        payout_id = request.path_params["payout_id"]
        decision = request.path_params["decision"]
        why = _text(form, "reason", required=decision == "reject")
        if decision == "approve":
            await c.approve_payout(payout_id, reason=why)
        elif decision == "reject":
            await c.reject_payout(payout_id, reason=why)
        else:
            raise HTTPException(404)
        return _back(f"/payouts/{payout_id}", decision + "d")

    async def payout_voucher(request: Request, session: Session, c: ClearingClient,
                             _f) -> Response:
        return _pdf(await c.get_voucher(payout_id=request.path_params["payout_id"]))

    # ---- reconciliation ----------------------------------------------------------------

    async def recon(request: Request, session: Session, c: ClearingClient, _f) -> Response:
        response = await c.list_reconciliation_runs(
            channel=_text(request.query_params, "channel"),
            settlement_date=_text(request.query_params, "date"),
            page_size=CONSOLE_PAGE_SIZE, page_token=_token(request))
        return page(request, "recon.html", session, runs=response.runs,
                    next_token=response.next_page_token,
                    channel=request.query_params.get("channel", ""),
                    date=request.query_params.get("date", ""))

    async def discrepancies(request: Request, session: Session, c: ClearingClient,
                            _f) -> Response:
        state_name = _text(request.query_params, "state").upper()
        states = []
        if state_name:
            try:
                states = [rpb.DiscrepancyState.Value("DISCREPANCY_STATE_" + state_name)]
            except ValueError:
                raise Refused(400, "not a discrepancy state", "state") from None
        run_id = _int(request, "run_id")
        response = await c.list_discrepancies(run_id=run_id, states=states,
                                              page_size=CONSOLE_PAGE_SIZE,
                                              page_token=_token(request))
        run = await c.get_reconciliation_run(run_id) if run_id else None
        return page(request, "discrepancies.html", session,
                    discrepancies=response.discrepancies, next_token=response.next_page_token,
                    state=state_name, run=run, run_id=run_id or "",
                    actions=[_enum_name(rpb.ResolutionAction, a, "RESOLUTION_ACTION_")
                             for a in rpb.ResolutionAction.values() if a],
                    states=[_enum_name(rpb.DiscrepancyState, s, "DISCREPANCY_STATE_")
                            for s in rpb.DiscrepancyState.values() if s])

    async def propose(request: Request, session: Session, c: ClearingClient,
                      form) -> Response:
        action_name = _text(form, "action", required=True).upper()
        try:
            action = rpb.ResolutionAction.Value("RESOLUTION_ACTION_" + action_name)
        except ValueError:
            raise Refused(400, "not a resolution action", "action") from None
        amount = 0
        if _text(form, "amount"):
            amount = _amount(form, "amount", _text(form, "currency") or "CNY")
        resolution = await c.propose_resolution(
            request.path_params["discrepancy_id"], action, note=_text(form, "note"),
            amount_minor=amount)
        return _back(f"/recon/resolutions/{resolution.resolution_id}", "proposed")

    async def resolution(request: Request, session: Session, c: ClearingClient,
                         _f) -> Response:
        found = await c.get_resolution(request.path_params["resolution_id"])
        return page(request, "resolution.html", session, resolution=found,
                    detail=json.dumps(_as_dict(found), indent=2, ensure_ascii=False))

    async def resolution_review(request: Request, session: Session, c: ClearingClient,
                                form) -> Response:
        resolution_id = request.path_params["resolution_id"]
        decision = request.path_params["decision"]
        note = _text(form, "note", required=decision == "reject")
        if decision == "approve":
            await c.approve_resolution(resolution_id, note=note)
        elif decision == "reject":
            await c.reject_resolution(resolution_id, note=note)
        else:
            raise HTTPException(404)
        return _back(f"/recon/resolutions/{resolution_id}", decision + "d")

    # ---- risk --------------------------------------------------------------------------

    async def risk(request: Request, session: Session, c: ClearingClient, _f) -> Response:
        state_name = _text(request.query_params, "state").upper()
        state = 0
        if state_name:
            try:
                state = risk_pb2.RiskEventState.Value("RISK_EVENT_STATE_" + state_name)
            except ValueError:
                raise Refused(400, "not a risk event state", "state") from None
        response = await c.call(c.risk.ListRiskEvents, risk_pb2.ListRiskEventsRequest(
            state=state, page_size=CONSOLE_PAGE_SIZE, page_token=_token(request)))
        return page(request, "risk.html", session, events=response.events,
                    next_token=response.next_page_token, state=state_name,
                    states=[_enum_name(risk_pb2.RiskEventState, s, "RISK_EVENT_STATE_")
                            for s in risk_pb2.RiskEventState.values() if s])

    async def risk_event(request: Request, session: Session, c: ClearingClient,
                         _f) -> Response:
        response = await c.call(c.risk.GetRiskEvent, risk_pb2.GetRiskEventRequest(
            event_id=request.path_params["event_id"]))
        event = response.event
        try:
            evidence = json.dumps(json.loads(event.evidence_json or "{}"), indent=2,
                                  ensure_ascii=False)
        except ValueError:
            evidence = event.evidence_json
        return page(request, "risk_event.html", session, event=event, evidence=evidence)

    async def risk_resolve(request: Request, session: Session, c: ClearingClient,
                           form) -> Response:
        event_id = request.path_params["event_id"]
        name = _text(form, "decision", required=True).upper()
        try:
            decision = risk_pb2.RiskDecision.Value("RISK_DECISION_" + name)
        except ValueError:
            raise Refused(400, "release or reject", "decision") from None
        from clearing_client import new_request_id
        await c.call(c.risk.ResolveRiskEvent, risk_pb2.ResolveRiskEventRequest(
            request_id=new_request_id(), event_id=event_id, decision=decision,
            note=_text(form, "note", required=True)))
        return _back(f"/risk/{event_id}", "resolution recorded")

    # ---- events ------------------------------------------------------------------------

    async def events(request: Request, session: Session, c: ClearingClient, _f) -> Response:
        kind = _text(request.query_params, "type")
        if kind and kind not in EventType.ALL:
            raise Refused(400, "not an event type", "type")
        after = _int(request, "after")
        response = await c.list_events(after, types=[kind] if kind else [],
                                       page_size=CONSOLE_PAGE_SIZE)
        rows = [(e, _event_link(e)) for e in response.events]
        more = len(response.events) == CONSOLE_PAGE_SIZE and response.next_cursor > after
        return page(request, "events.html", session, rows=rows, kind=kind, after=after,
                    next_after=response.next_cursor if more else 0,
                    kinds=sorted(EventType.ALL))

    routes = [
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", view(signout, post=True), methods=["POST"]),
        Route("/", view(overview)),
        Route("/splits", view(splits)),
        Route("/splits/{split_id:int}", view(split_detail)),
        Route("/splits/{split_id:int}/voucher.pdf", view(split_voucher)),
        Route("/splits/{split_id:int}/release", view(split_release, post=True),
              methods=["POST"]),
        Route("/splits/{split_id:int}/refund", view(split_refund, post=True),
              methods=["POST"]),
        Route("/accounts", view(accounts)),
        Route("/accounts/{account_id:int}", view(account_detail)),
        Route("/payouts", view(payouts)),
        Route("/payouts/{payout_id:int}", view(payout_detail)),
        Route("/payouts/{payout_id:int}/voucher.pdf", view(payout_voucher)),
        Route("/payouts/{payout_id:int}/{decision}", view(payout_review, post=True),
              methods=["POST"]),
        Route("/recon", view(recon)),
        Route("/recon/discrepancies", view(discrepancies)),
        Route("/recon/discrepancies/{discrepancy_id:int}/propose", view(propose, post=True),
              methods=["POST"]),
        Route("/recon/resolutions/{resolution_id:int}", view(resolution)),
        Route("/recon/resolutions/{resolution_id:int}/{decision}",
              view(resolution_review, post=True), methods=["POST"]),
        Route("/risk", view(risk)),
        Route("/risk/{event_id:int}", view(risk_event)),
        Route("/risk/{event_id:int}/resolve", view(risk_resolve, post=True), methods=["POST"]),
        *rule_pages.routes(view, page, config.call_timeout_s),
        *exports.routes(view),
        Route("/events", view(events)),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(SecurityHeaders)])
    app.state.sessions = sessions
    return app
