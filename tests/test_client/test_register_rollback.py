"""A registration whose first bind fails is rolled back, so that it can be retried."""

from __future__ import annotations

import pytest

from troupe import HubClient, NotFoundError, Passport, StoreError
from troupe.hub import Hub
from troupe.testing import FaultyStore


async def test_a_registration_whose_bind_failed_is_rolled_back_and_can_be_retried(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    troupe_store_faults.fail_next("load_cursors")  # the bind reads the identity's cursors
    with pytest.raises(StoreError, match="load_cursors"):
        await troupe_hub_client.register_human(Passport(name="late"))
    with pytest.raises(NotFoundError):
        await troupe_hub.get_agent("late")
    late = await troupe_hub_client.register_human(Passport(name="late"))
    assert (await troupe_hub.get_agent("late")).agent_id == late.agent_id


async def test_when_the_rollback_fails_too_the_error_says_how_to_get_the_identity(
    troupe_hub: Hub,
    troupe_hub_client: HubClient,
    troupe_store_faults: FaultyStore,
    autojump_clock: object,
) -> None:
    troupe_store_faults.fail_next("load_cursors")
    troupe_store_faults.fail_next("delete_agent")
    with pytest.raises(StoreError, match=r"registered but not bound.*attach it by name") as info:
        await troupe_hub_client.register_human(Passport(name="late"))
    assert isinstance(info.value.__cause__, StoreError)
    agent_id = (await troupe_hub.get_agent("late")).agent_id
    assert agent_id is not None
    assert agent_id in str(info.value)
