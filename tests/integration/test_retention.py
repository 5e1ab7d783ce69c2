"""Telemetry retention prunes old readings in batches and keeps recent ones."""

from central.adapters.retention import prune
from central.adapters.schema import migrations
from central.adapters.storage import Store
from tests.postgres_server import BOTH_ENGINES

pytest_plugins = ("tests.integration.central_fixtures",)
pytestmark = BOTH_ENGINES

DAY_MS = 86_400_000
NOW_S = 1_800_000_000


async def test_old_readings_are_pruned_recent_ones_kept(database):
    store = Store(database, [migrations])
    await store.open()
    try:
        now_ms = NOW_S * 1000
        ages_days = [40] * 25_000 + [31] * 10 + [29] * 7 + [0] * 3

        def fill(db):
            db["telemetry"].insert_all(
                {
                    "pile_no": "F1",
                    "port": 1,
                    "ts": now_ms - age * DAY_MS,
                    "session": 1,
                    "seq": i,
                    "state": "available",
                    "energy_wh": 0,
                }
                for i, age in enumerate(ages_days, 1)
            )

        await store.write(fill)
        assert await prune(store, retention_days=30, now_s=NOW_S) == 25_010
        left = await store.read(
            lambda db: [r["seq"] for r in db.query("SELECT seq FROM telemetry ORDER BY seq")]
        )
        assert left == list(range(25_011, 25_021))
    finally:
        await store.close()
