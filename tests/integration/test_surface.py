"""The public surface: what the server registers and reflection lists, health, metrics,
and the structured logs."""

from __future__ import annotations

import json
import logging
import urllib.request

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clearing import logs, metrics
from clearing.v1 import audit_pb2
from clearing.v1 import (ledger_pb2 as pb, payout_pb2, payout_pb2_grpc, platform_pb2,
                         reconciliation_pb2, report_pb2, report_pb2_grpc, risk_pb2, split_pb2)
from tests.split_support import new_key
from tests.support import Client, details


SERVICES = {
    "clearing.v1.LedgerService", "clearing.v1.SplitService", "clearing.v1.PayoutService",
    "clearing.v1.ReconciliationService", "clearing.v1.ReportService", "clearing.v1.RiskService",
    "clearing.v1.PlatformService",
    "clearing.v1.AuditService",
    "clearing.v1.EventService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}


async def test_reflection_lists_exactly_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(timeout=10)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    names = {s.name for s in response.list_services_response.service}
    assert names == SERVICES



async def test_reflection_serves_the_rule_set_file_with_the_service(channel):
    """grpcurl and other reflection clients resolve SplitService with its import
    (clearing/v1/rule_set.proto, where RuleSet lives), and RuleSet by itself."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(timeout=10)
    served = {}
    for symbol in ("clearing.v1.SplitService", "clearing.v1.RuleSet"):
        await call.write(reflection_pb2.ServerReflectionRequest(
            file_containing_symbol=symbol))
        response = await call.read()
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in response.file_descriptor_response.file_descriptor_proto]
        served[symbol] = {f.name: f for f in files}
    await call.done_writing()
    split = served["clearing.v1.SplitService"]
    assert "clearing/v1/rule_set.proto" in split["clearing/v1/split.proto"].dependency
    assert "clearing/v1/rule_set.proto" in split
    rule_set = served["clearing.v1.RuleSet"]["clearing/v1/rule_set.proto"]
    assert "RuleSet" in {m.name for m in rule_set.message_type}
    assert "clearing/v1/split.proto" not in rule_set.dependency

async def test_contract_method_names():
    ledger = {m.name for m in pb.DESCRIPTOR.services_by_name["LedgerService"].methods}
    assert ledger == {"CreateAccount", "GetAccount", "ListAccounts", "FreezeAccount",
                      "UnfreezeAccount", "CloseAccount", "GetBalance", "ListEntries",
                      "Transfer", "VerifyLedger"}
    split = {m.name for m in split_pb2.DESCRIPTOR.services_by_name["SplitService"].methods}
    assert split == {"PublishRuleSet", "ActivateRuleSet", "GetRuleSet", "ListRuleSets",
                     "PreviewSplit", "Split", "SplitBatch", "SplitStream", "GetSplit",
                     "ListSplits", "ReleaseSplit", "CancelSplit", "RefundSplit", "SimulateRuleSet"}
    payout = {m.name for m in payout_pb2.DESCRIPTOR.services_by_name["PayoutService"].methods}
    assert payout == {"BindBankAccount", "SetPayoutSchedule", "RequestPayout", "GetPayout",
                      "ListPayouts", "ApprovePayout", "RejectPayout"}
    recon = {m.name for m in
             reconciliation_pb2.DESCRIPTOR.services_by_name["ReconciliationService"].methods}
    assert recon == {"ImportStatement", "GetReconciliationRun", "ListReconciliationRuns",
                     "ListDiscrepancies", "PostSettlement", "ProposeResolution",
                     "ApproveResolution", "RejectResolution", "GetResolution"}
    report = {m.name for m in report_pb2.DESCRIPTOR.services_by_name["ReportService"].methods}
    assert report == {"GetVoucher", "VerifyVoucher", "ExportReport"}
    risk = {m.name for m in risk_pb2.DESCRIPTOR.services_by_name["RiskService"].methods}
    assert risk == {"PublishRiskPolicy", "ActivateRiskPolicy", "GetRiskPolicy",
                    "ListRiskEvents", "GetRiskEvent", "ResolveRiskEvent"}
    admin = {m.name for m in
             platform_pb2.DESCRIPTOR.services_by_name["PlatformService"].methods}
    assert admin == {"CreatePlatform", "GetPlatform", "ListPlatforms", "CreateApiKey",
                     "ListApiKeys", "RevokeApiKey", "GetPayoutConfig", "SetPayoutConfig",
                     "ApprovePayoutConfigChange", "RejectPayoutConfigChange",
                     "GetBusinessCalendar", "SetBusinessCalendar"}
    trail = {m.name for m in audit_pb2.DESCRIPTOR.services_by_name["AuditService"].methods}
    assert trail == {"ListAuditEvents"}


async def test_health_serves_every_service(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", "clearing.v1.LedgerService", "clearing.v1.SplitService",
                 "clearing.v1.PayoutService", "clearing.v1.ReconciliationService",
                 "clearing.v1.ReportService", "clearing.v1.AuditService"):
        r = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert r.status == health_pb2.HealthCheckResponse.SERVING, name


async def test_payout_methods_authenticate_before_validating(channel, client: Client):
    stub = payout_pb2_grpc.PayoutServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetPayout(payout_pb2.GetPayoutRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetPayout(payout_pb2.GetPayoutRequest(), metadata=client.metadata,
                             timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)[1] == ["payout_id"]


async def test_a_server_stream_authenticates_and_checks_roles_first(channel, platform,
                                                                   database_url):
    """ExportReport (server streaming) goes through the interceptor as unary calls do: no
    key UNAUTHENTICATED, a gateway key PERMISSION_DENIED, before the method runs."""
    stub = report_pb2_grpc.ReportServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.ExportReport(report_pb2.ExportReportRequest(), timeout=10):
            pass
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    gateway = await new_key(database_url, platform.platform_id, {"gateway"})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.ExportReport(report_pb2.ExportReportRequest(), timeout=10,
                                         metadata=(("authorization", f"Bearer {gateway}"),)):
            pass
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_metrics_count_calls_by_method_and_code(client: Client, running):
    # the pool gauges read the pool of the last server started in this process: another
    # module's server may have started after this one, so watch this one again
    metrics.watch(running.pool, running.writer)
    port = metrics.serve("127.0.0.1:0", 0)
    await client.open("metered")
    with pytest.raises(grpc.aio.AioRpcError):
        await client.open("metered")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'clearing_rpc_calls_total{code="OK",method="CreateAccount"}' in text
    assert 'clearing_rpc_calls_total{code="ALREADY_EXISTS",method="CreateAccount"}' in text
    assert "clearing_rpc_latency_seconds_bucket" in text
    assert "clearing_writer_queue_depth" in text
    assert 'clearing_db_pool_connections{state="max"} 20.0' in text
    assert 'clearing_db_pool_connections{state="idle"}' in text


async def test_logs_are_json_with_the_call_context(capsys):
    logger = logging.getLogger("clearing.test")
    handler = logging.StreamHandler()
    handler.setFormatter(logs.JsonFormatter())
    logger.addHandler(handler)
    try:
        token = logs.CALL.set(("Transfer", "req-42", 7))
        logger.warning("something happened", extra={"account_id": 5})
        logs.CALL.reset(token)
    finally:
        logger.removeHandler(handler)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["msg"] == "something happened"
    assert (record["method"], record["request_id"], record["platform_id"]) == ("Transfer",
                                                                              "req-42", 7)
    assert record["account_id"] == 5 and record["level"] == "WARNING"
