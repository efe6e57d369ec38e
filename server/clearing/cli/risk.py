"""`clearing risk publish|activate|policy|events|event|resolve`: RiskService through the
clearing_client SDK (`client.call(client.risk.<Method>, request)`; see `clearing.cli.client`
for the key, the address and the output: the response as JSON on stdout)."""

from __future__ import annotations

import uuid
from pathlib import Path

from clearing.cli.client import _client_options, _enum, _run
from clearing.config import Settings

STATES = ("open", "resolution_proposed", "released", "rejected")
RULES = ("large_split", "frequency", "daily_inflow", "ratio_swing")
DECISIONS = ("release", "reject")


def _request(args):
    from clearing_client.v1 import risk_pb2 as pb
    from google.protobuf import json_format

    rid = args.request_id or str(uuid.uuid4())
    a = args.action
    if a == "publish":
        policy = json_format.Parse(Path(args.file).read_text("utf-8"), pb.RiskPolicy())
        return "PublishRiskPolicy", pb.PublishRiskPolicyRequest(request_id=rid, policy=policy)
    if a == "activate":
        return "ActivateRiskPolicy", pb.ActivateRiskPolicyRequest(request_id=rid,
                                                                  version=args.version)
    if a == "policy":
        return "GetRiskPolicy", pb.GetRiskPolicyRequest(version=args.version or 0)
    if a == "events":
        return "ListRiskEvents", pb.ListRiskEventsRequest(
            state=_enum(pb.RiskEventState, "RISK_EVENT_STATE", args.state) if args.state else 0,
            rule=_enum(pb.RiskRule, "RISK_RULE", args.rule) if args.rule else 0,
            account_id=args.account or 0, page_size=args.page_size,
            page_token=args.page_token or "")
    if a == "event":
        return "GetRiskEvent", pb.GetRiskEventRequest(event_id=args.event_id)
    return "ResolveRiskEvent", pb.ResolveRiskEventRequest(
        request_id=rid, event_id=args.event_id,
        decision=_enum(pb.RiskDecision, "RISK_DECISION", args.decision), note=args.note)


def cmd_risk(args, settings: Settings) -> int:
    method, request = _request(args)

    async def call(client):
        return await client.call(getattr(client.risk, method), request)
    return _run(args, settings, call)


def add_parser(sub) -> None:
    """risk publish|activate|policy|events|event|resolve."""
    risk = sub.add_parser("risk", help="risk policy and risk events").add_subparsers(
        dest="action", required=True)
    p = risk.add_parser("publish", help="publish a risk policy version (operator)")
    p.add_argument("file", help="a JSON file of the RiskPolicy message")
    p = risk.add_parser("activate", help="activate a version (approver, not the publisher)")
    p.add_argument("version", type=int)
    p = risk.add_parser("policy", help="the active policy, or a version")
    p.add_argument("version", type=int, nargs="?")
    p = risk.add_parser("events", help="risk events, newest first")
    p.add_argument("--state", choices=STATES)
    p.add_argument("--rule", choices=RULES)
    p.add_argument("--account", type=int, help="only this receiver's")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    p = risk.add_parser("event", help="one event with its evidence and steps")
    p.add_argument("event_id", type=int)
    p = risk.add_parser("resolve", help="propose a decision, or confirm another key's"
                                        " (approver)")
    p.add_argument("event_id", type=int)
    p.add_argument("--decision", required=True, choices=DECISIONS)
    p.add_argument("--note", required=True, help="why")
    for sp in risk.choices.values():
        _client_options(sp)
        sp.set_defaults(func=cmd_risk)
