"""SplitService rule sets through the generated stubs: publish (validation with field paths,
versions, idempotency), activate with maker-checker, get, list, and the CLI."""

from __future__ import annotations

import grpc
import pytest

from clearing.api import rules_proto as proto
from clearing.v1 import rule_set_pb2
from clearing.v1 import split_pb2 as pb
from tests.split_support import Splits, new_key, open_accounts
from tests.support import Client, details, rid
from tests.support import cli as _cli
from tests.unit.rules.helpers import EXAMPLES

B2B = (EXAMPLES / "b2b.yaml").read_text()
B2B_REFS = ["CUSTODIAL", "PLAT_001", "SUP_2025001", "LOGISTICS_B", "GOV_ACCOUNT"]


@pytest.fixture
async def maker(channel, client: Client) -> Splits:
    await open_accounts(client, B2B_REFS)
    return Splits(channel, client.metadata[0][1].split(" ", 1)[1])


@pytest.fixture
async def checker(channel, database_url, platform) -> Splits:
    return Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))


async def test_publish_stores_numbered_immutable_versions(maker: Splits):
    first = await maker.publish(B2B)
    second = await maker.publish(B2B)
    assert (first.name, first.version, second.version) == ("b2b", 1, 2)
    assert first.status == rule_set_pb2.RULE_SET_STATUS_PUBLISHED
    expected_sha = proto.content_sha256(proto.rule_set_proto_from_yaml(B2B))
    assert first.content_sha256 == second.content_sha256 == expected_sha
    assert first.rule_set_id and first.rule_set_id != second.rule_set_id
    assert first.published_by and first.level_count == 1
    assert [r.rule_name for r in first.rules] == [
        "special-government-purchase", "promotion-enterprise", "base"]


async def test_publish_validate_only_stores_nothing(maker: Splits):
    response = await maker.call("PublishRuleSet", pb.PublishRuleSetRequest(
        rule_set=proto.rule_set_proto_from_yaml(B2B), validate_only=True))
    assert response.rule_set.version == 0 and response.rule_set.content_sha256
    listed = await maker.call("ListRuleSets", pb.ListRuleSetsRequest(rule_set_name="b2b"))
    assert list(listed.rule_sets) == []


async def test_publish_is_idempotent_by_request_id(maker: Splits):
    request_id = rid()
    first = await maker.publish(B2B, request_id=request_id)
    again = await maker.publish(B2B, request_id=request_id)
    assert (again.version, again.rule_set_id) == (first.version, first.rule_set_id)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await maker.publish(B2B.replace("(seed 002)\n", "(changed)\n"),
                            request_id=request_id)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(err.value)[0] == "REQUEST_ID_REUSED"


async def test_invalid_rule_set_answers_every_problem_with_its_path(maker: Splits):
    broken = (B2B.replace("ratio_bps: 7500", "ratio_bps: 9500")
                 .replace("LOGISTICS_B}  # individual", "NOBODY}  # individual"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await maker.publish(broken)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, fields = details(err.value)
    assert reason == "RULE_SET_INVALID"
    assert "rule_set.rules[1].shares[2].receiver.account_ref" in fields
    assert any(f.startswith("rule_set.rules[1].shares") for f in fields if "account" not in f)
    listed = await maker.call("ListRuleSets", pb.ListRuleSetsRequest())
    assert list(listed.rule_sets) == []


async def test_only_operators_publish(channel, database_url, platform, maker: Splits):
    approver = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await approver.publish(B2B)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_maker_checker(channel, database_url, platform, maker: Splits, checker: Splits):
    both = Splits(channel, await new_key(database_url, platform.platform_id,
                                         {"operator", "approver"}))
    published = await both.publish(B2B)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await both.activate("b2b", published.version)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(err.value)[0] == "MAKER_CHECKER"
    assert "may not activate" in err.value.details()
    activated = await checker.activate("b2b", published.version,
                                       content_sha256=published.content_sha256,
                                       expected_active_version=0, comment="reviewed")
    assert activated.rule_set.status == rule_set_pb2.RULE_SET_STATUS_ACTIVE
    assert activated.previous_active_version == 0
    assert activated.rule_set.activated_by and activated.rule_set.activated_by != \
        published.published_by


async def test_activation_checks_content_and_active_version(maker: Splits, checker: Splits):
    v1 = await maker.publish(B2B)
    v2 = await maker.publish(B2B.replace("(seed 002)\n", "(changed)\n"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await checker.activate("b2b", 2, content_sha256=v1.content_sha256)
    assert (err.value.code(), details(err.value)[0]) == (
        grpc.StatusCode.FAILED_PRECONDITION, "CONTENT_CHANGED")
    await checker.activate("b2b", 1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await checker.activate("b2b", 2, expected_active_version=0)
    assert details(err.value)[0] == "ACTIVE_VERSION_CHANGED"
    second = await checker.activate("b2b", 2, content_sha256=v2.content_sha256,
                                    expected_active_version=1)
    assert second.previous_active_version == 1
    old = (await maker.call("GetRuleSet", pb.GetRuleSetRequest(
        rule_set_name="b2b", rule_set_version=1))).rule_set
    assert old.status == rule_set_pb2.RULE_SET_STATUS_SUPERSEDED and old.HasField("supersede_time")
    active = (await maker.call("GetRuleSet", pb.GetRuleSetRequest(rule_set_name="b2b"))).rule_set
    assert (active.version, active.status) == (2, rule_set_pb2.RULE_SET_STATUS_ACTIVE)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await checker.activate("b2b", 9)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_get_and_list_paginate(maker: Splits, checker: Splits):
    for _ in range(3):
        await maker.publish(B2B)
    await checker.activate("b2b", 2)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await maker.call("GetRuleSet", pb.GetRuleSetRequest(rule_set_name="nothing"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    seen, token = [], ""
    for _ in range(4):
        page = await maker.call("ListRuleSets", pb.ListRuleSetsRequest(
            page_size=1, page_token=token, rule_set_name="b2b"))
        seen += [(r.version, r.status, len(r.rules)) for r in page.rule_sets]
        token = page.next_page_token
        if not token:
            break
    assert seen == [(3, rule_set_pb2.RULE_SET_STATUS_PUBLISHED, 0),
                    (2, rule_set_pb2.RULE_SET_STATUS_ACTIVE, 0),
                    (1, rule_set_pb2.RULE_SET_STATUS_PUBLISHED, 0)]
    active = await maker.call("ListRuleSets", pb.ListRuleSetsRequest(
        status=rule_set_pb2.RULE_SET_STATUS_ACTIVE, include_rules=True))
    assert [(r.version, len(r.rules)) for r in active.rule_sets] == [(2, 3)]


async def test_cli_publish_activate_list(running, tmp_path, maker: Splits, checker: Splits):
    path = tmp_path / "b2b.yaml"
    path.write_text(B2B)
    maker_key = maker.metadata[0][1].split(" ", 1)[1]
    code, out, _ = await _cli(running, maker_key, "rules", "publish", str(path))
    assert code == 0 and '"version": "1"' in out
    code, _, err = await _cli(running, maker_key, "rules", "activate", "b2b", "1")
    assert code == 1 and "PERMISSION_DENIED" in err
    checker_key = checker.metadata[0][1].split(" ", 1)[1]
    code, out, _ = await _cli(running, checker_key, "rules", "activate", "b2b", "1")
    assert code == 0 and "RULE_SET_STATUS_ACTIVE" in out
    code, out, _ = await _cli(running, maker_key, "rules", "list")
    assert code == 0 and '"name": "b2b"' in out
    path.write_text(B2B.replace("ratio_bps: 7500", "ratio_bps: 9500"))
    code, _, err = await _cli(running, maker_key, "rules", "publish", str(path))
    assert code == 1 and "rule_set.rules[1].shares" in err
