"""The Rule sets pages: the versions, a version's YAML and the diff of two, publishing a new
version from YAML (the validator's messages at their field paths, and the YAML line each
path names), the backtest of a candidate (SimulateRuleSet) and activation with the ratio
swing shown (ActivateRuleSet: its `ratio_swing`, or the figures of a swing that needs a
second approver). Every check is the API's: a key without the role is refused as the API
refuses it (PERMISSION_DENIED ROLE_REQUIRED or MAKER_CHECKER)."""

from __future__ import annotations

import difflib
import re

import grpc
import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clearing.console.web import Refused, _back, _int, _rule_set_text, _text, _token
from clearing.limits import (CONSOLE_BACKTEST_ORDERS_MAX, CONSOLE_PAGE_SIZE,
                             RULE_SET_BYTES_MAX)
from clearing.reasons import Reason
from clearing_client import ClearingClient, ClearingRpcError

_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
# The ErrorInfo metadata of RATIO_SWING_NEEDS_SECOND_APPROVER, in the order shown.
SWING_KEYS = ("swing_threshold_bps", "max_swing_bps", "receiver_external_ref",
              "receiver_account_id", "active_share_bps", "candidate_share_bps",
              "receivers_over_threshold", "order_count", "period_days", "active_version",
              "first_approver_key_id")


def yaml_line(text: str, path: str) -> int:
    """The line (1-based) of the YAML `text` that a field path such as
    `rule_set.rules[1].shares[0].ratio_bps` names: its deepest part present in the text
    (0 when the text is not YAML or the path names nothing in it)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 0
    if node is None:
        return 0
    line = 0
    for name, index in _STEP.findall(path.removeprefix("rule_set").lstrip(".")):
        if name and isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if getattr(k, "value", None) == name]
            if not found:
                break
            key, node = found[0]
            line = key.start_mark.line + 1
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def violations_at(text: str, violations) -> list[tuple[str, str, int]]:
    """Each (field path, message) with the YAML line its path names."""
    return [(v.field, v.description, yaml_line(text, v.field)) for v in violations]


def routes(view, page, timeout_s: float) -> list[Route]:
    """The pages, wrapped by app.py's `view` (sign-in, CSRF) and drawn by its `page`."""

    async def rules(request: Request, session, c: ClearingClient, _f) -> Response:
        response = await c.list_rule_sets(rule_set_name=_text(request.query_params, "name"),
                                          page_size=CONSOLE_PAGE_SIZE,
                                          page_token=_token(request))
        return page(request, "rules.html", session, rule_sets=response.rule_sets,
                    next_token=response.next_page_token,
                    name=request.query_params.get("name", ""))

    async def rule_set(request: Request, session, c: ClearingClient, _f, *, status=200,
                       activation=None, swing_refusal=None, swing_message="") -> Response:
        name = request.path_params["name"]
        version = request.path_params["version"]
        found = await c.get_rule_set(name, version)
        text = _rule_set_text(found)
        other = _int(request, "diff", low=1)
        diff = None
        if other:
            against = _rule_set_text(await c.get_rule_set(name, other))
            diff = list(difflib.unified_diff(against.splitlines(), text.splitlines(),
                                             f"{name} v{other}", f"{name} v{version}",
                                             lineterm=""))
        return page(request, "rule_set.html", session, status, rule_set=found, text=text,
                    diff=diff, other=other or "", activation=activation,
                    swing_refusal=swing_refusal, swing_message=swing_message)

    async def publish_form(request: Request, session, c: ClearingClient, _f) -> Response:
        text = ""
        name = _text(request.query_params, "from")
        if name:
            text = _rule_set_text(await c.get_rule_set(
                name, _int(request, "version", low=0)))
        return page(request, "rule_publish.html", session, text=text, violations=[],
                    checked=None)

    async def publish(request: Request, session, c: ClearingClient, form) -> Response:
        from clearing.api.rules_proto import rule_set_proto_from_yaml
        from clearing.errors import InvalidArgument

        text = str(form.get("yaml") or "")
        if not text.strip():
            raise Refused(400, "paste the rule set's YAML", "yaml")
        if len(text.encode()) > RULE_SET_BYTES_MAX:
            raise Refused(400, f"at most {RULE_SET_BYTES_MAX} bytes", "yaml")
        validate_only = form.get("validate_only") == "1"
        problems: list = []
        try:
            message = rule_set_proto_from_yaml(text)
            published = await c.publish_rule_set(message, validate_only=validate_only)
        except InvalidArgument as exc:  # not YAML, or not RuleSet fields: read here
            problems = list(exc.violations)
        except ClearingRpcError as err:
            if err.code != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            problems = list(err.violations) or [_Violation("rule_set", err.message)]
        if problems:
            return page(request, "rule_publish.html", session, 400, text=text,
                        violations=violations_at(text, problems), checked=None)
        if validate_only:
            return page(request, "rule_publish.html", session, text=text, violations=[],
                        checked=published)
        return _back(f"/rules/{published.name}/{published.version}",
                     f"published version {published.version}")

    async def backtest(request: Request, session, c: ClearingClient, _f) -> Response:
        name = request.path_params["name"]
        version = request.path_params["version"]
        days = _int(request, "days", low=0)
        if days > 31:
            raise Refused(400, "1 to 31 days", "days")
        result = await c.simulate_rule_set(name, version, days=days,
                                           order_count_max=CONSOLE_BACKTEST_ORDERS_MAX,
                                           timeout_s=timeout_s)
        return page(request, "rule_backtest.html", session, result=result, days=days or 7,
                    orders_max=CONSOLE_BACKTEST_ORDERS_MAX,
                    refused=sorted(result.refused_count_by_reason.items()))

    async def activate(request: Request, session, c: ClearingClient, form) -> Response:
        name = request.path_params["name"]
        version = request.path_params["version"]
        try:
            response = await c.activate_rule_set(
                name, version, content_sha256=_text(form, "content_sha256"),
                comment=_text(form, "comment"))
        except ClearingRpcError as err:
            if err.reason != Reason.RATIO_SWING_NEEDS_SECOND_APPROVER:
                raise
            swing = [(k, err.metadata[k]) for k in SWING_KEYS if k in err.metadata]
            return await rule_set(request, session, c, None, status=409, swing_refusal=swing,
                                  swing_message=err.message)
        return await rule_set(request, session, c, None, activation=response)

    return [
        Route("/rules", view(rules)),
        Route("/rules/new", view(publish_form)),
        Route("/rules/new", view(publish, post=True), methods=["POST"]),
        Route("/rules/{name}/{version:int}", view(rule_set)),
        Route("/rules/{name}/{version:int}/backtest", view(backtest)),
        Route("/rules/{name}/{version:int}/activate", view(activate, post=True),
              methods=["POST"]),
    ]


class _Violation:
    """A field violation of an INVALID_ARGUMENT that named no field."""

    def __init__(self, field: str, description: str) -> None:
        self.field, self.description = field, description

