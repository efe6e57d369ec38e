"""`clearing risk ...` against the real server: file a policy (JSON), activate it with
another key, list a hit's event and resolve it, maker-checker, from the command line."""

from __future__ import annotations

import json

from tests.risk_support import World, make_world
from tests.split_support import order
from tests.support import cli

POLICY = {"limits": [{"currency_code": "CNY", "large_split_minor": "50000"}],
          "action": "RISK_ACTION_HOLD_SHARE"}


async def test_risk_commands(channel, client, database_url, platform, running, tmp_path):
    world: World = await make_world(channel, client, database_url, platform.platform_id)
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY))
    code, out, err = await cli(running, world.operator.key, "risk", "publish", str(path))
    assert code == 0, err
    assert json.loads(out)["policy"]["version"] == 1
    code, out, err = await cli(running, world.operator.key, "risk", "activate", "1")
    assert code == 1 and "PERMISSION_DENIED" in err
    code, out, err = await cli(running, world.approver_a.key, "risk", "activate", "1")
    assert code == 0, err
    code, out, _ = await cli(running, world.operator.key, "risk", "policy",
                             "--field", "policy.version")
    assert out.split() == ["1"]
    split = await world.splits.split(order(51_001, rule_set_name="to-m"))
    code, out, err = await cli(running, world.approver_a.key, "risk", "events", "--state",
                               "open", "--rule", "large_split", "--field", "events.event_id")
    assert code == 0, err
    [event_id] = out.split()
    code, out, _ = await cli(running, world.approver_a.key, "risk", "event", event_id)
    assert json.loads(out)["event"]["split_id"] == str(split.split_id)
    code, out, err = await cli(running, world.approver_a.key, "risk", "resolve", event_id,
                               "--decision", "release", "--note", "known customer")
    assert code == 0, err
    code, out, err = await cli(running, world.approver_a.key, "risk", "resolve", event_id,
                               "--decision", "release", "--note", "me again")
    assert code == 1 and "PERMISSION_DENIED" in err and "maker-checker" in err
    code, out, err = await cli(running, world.approver_b.key, "risk", "resolve", event_id,
                               "--decision", "release", "--note", "agreed",
                               "--field", "event.state")
    assert code == 0, err
    assert out.split() == ["RISK_EVENT_STATE_RELEASED"]
    assert (await world.client.balance(world.ids["M_10086"])).posted_minor == 50_001
