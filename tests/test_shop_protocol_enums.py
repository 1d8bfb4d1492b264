"""The shop's ENUM and DATE list filters (examples/shop.toml): served per variant, named
through the table map, also after DDL reorders the members."""

from __future__ import annotations

import pytest

from cachetail.devstack import MariaDB
from support.api import running
from support.shop import card_id, on_shop, one, run, worker_on_shop
from support.stack import Stack
from support.waiting import wait_for_async

pytestmark = [pytest.mark.anyio, pytest.mark.redis_kinds("single", "cluster")]


@pytest.fixture(autouse=True)
def _near(nearcache: str) -> str:
    return nearcache


@pytest.mark.redis_kinds("single")
@pytest.mark.parametrize("mode", ["delete", "refresh"])
async def test_an_enum_filtered_list_is_served_and_invalidated_per_variant(
        stack: Stack, shop: MariaDB, redis_client, sdb, workers, mode: str) -> None:
    """?state=Active is the member 'active' (utf8mb4_unicode_ci), one variant with ?state=active.
    A card moving from active to void invalidates those two variants, not 'redeemed'.  The
    binlog carries the member's index: the invalidator names it through the table map."""
    w = worker_on_shop(stack, shop, workers, INVALIDATOR_MODE=mode)
    n = next(i for i in range(1, 201) if i % 5 and i % 23 and i % 4)  # active, with an expiry date
    expires = one(sdb, "SELECT expires_on FROM gift_cards WHERE id = %s", card_id(n))["expires_on"].isoformat()
    async with running(on_shop(stack.api_env(), shop, CACHE_KEY_PREFIX=w.prefix)) as (_, client):
        async def x_cache(**params: str) -> str:
            answer = await client.get("/gift-cards", params=params)
            assert answer.status_code == 200, answer.text
            return answer.headers["x-cache"]

        assert [await x_cache(state="active"), await x_cache(state="Active"), await x_cache(state="ACTIVE ")] \
            == ["MISS", "HIT", "HIT"]
        assert [await x_cache(state="void"), await x_cache(state="redeemed")] == ["MISS", "MISS"]
        assert [await x_cache(expires=expires), await x_cache(expires=expires, state="active")] == ["MISS", "MISS"]
        bad = await client.get("/gift-cards", params={"state": "lost"})
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid_state")
        assert "one of active, redeemed, void" in bad.json()["detail"]
        day = await client.get("/gift-cards", params={"expires": "2025-02-30"})
        assert (day.status_code, day.json()["error"]) == (400, "invalid_expires")

        run(sdb, "UPDATE gift_cards SET state = 'void' WHERE id = %s", card_id(n))

        async def void_invalidated() -> bool:
            return await x_cache(state="void") != "HIT"

        await wait_for_async(void_invalidated, 10, "the void variant invalidated")
        assert [await x_cache(state="Active"), await x_cache(expires=expires, state="active")] == ["MISS", "MISS"]
        assert await x_cache(state="redeemed") == "HIT"  # the card was never in it
        voided = await client.get("/gift-cards", params={"state": "VOID", "expires": expires})
        assert [c["state"] for c in voided.json()] == ["void"] and voided.headers["x-cache"] == "MISS"
    run(sdb, "UPDATE gift_cards SET state = 'active' WHERE id = %s", card_id(n))


@pytest.mark.redis_kinds("single")
async def test_enum_members_reordered_by_ddl_are_named_through_the_new_table_map(
        stack: Stack, shop: MariaDB, redis_client, sdb, workers) -> None:
    """ALTER TABLE ... MODIFY reorders the members (the stored indexes change meaning) and adds
    one: the DDL rule drops the list's keys, and the next change is named by the new map."""
    w = worker_on_shop(stack, shop, workers)
    n = next(i for i in range(1, 201) if i % 5 and i % 23 and i % 4 and i > 100)
    async with running(on_shop(stack.api_env(), shop, CACHE_KEY_PREFIX=w.prefix)) as (_, client):
        async def x_cache(state: str) -> str:
            return (await client.get("/gift-cards", params={"state": state})).headers["x-cache"]

        try:
            run(sdb, "ALTER TABLE gift_cards MODIFY state ENUM('void', 'lost', 'redeemed', 'active') NOT NULL")
            await wait_for_async(lambda: "DDL on a followed table" in w.log(), 10, "the DDL rule")
            assert [await x_cache("active"), await x_cache("active"), await x_cache("redeemed")] \
                == ["MISS", "HIT", "MISS"]
            run(sdb, "UPDATE gift_cards SET state = 'redeemed' WHERE id = %s", card_id(n))

            async def active_invalidated() -> bool:
                return await x_cache("active") != "HIT"

            await wait_for_async(active_invalidated, 10, "the active variant invalidated")
            assert await x_cache("redeemed") == "MISS"  # index 3 read as 'redeemed', not 'void'
        finally:
            run(sdb, "UPDATE gift_cards SET state = 'active' WHERE id = %s", card_id(n))
            run(sdb, "ALTER TABLE gift_cards MODIFY state ENUM('active', 'redeemed', 'void') NOT NULL")
