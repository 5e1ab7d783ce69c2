"""The SQLite unit of work: one change's rows, scheduler state and live sessions in one transaction;
repositories round-trip what the application stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from central.adapters import users
from central.adapters.charging import stored_detail
from central.adapters.schema import ORDER_MIGRATIONS, migrations
from central.adapters.storage import Store
from central.adapters.unit_of_work import SqliteUnitOfWork
from central.application.ports import Notice, Repositories, SessionOrder
from central.application.sessions import LiveSession
from central.application.unit_of_work import Changes
from central.domain.billing import DetailRecord, PeriodCharge
from central.domain.metering import MeterSession
from central.domain.tariff import Period
from tests.postgres_server import BOTH_ENGINES

pytest_plugins = ("tests.integration.central_fixtures",)
pytestmark = BOTH_ENGINES
AT = datetime(2024, 1, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
async def uow(database):
    store = Store(database, [migrations, ORDER_MIGRATIONS])
    await store.open()
    yield SqliteUnitOfWork(store, "test")
    await store.close()


async def _user(uow: SqliteUnitOfWork) -> int:
    return await uow.store.write(lambda db: users.insert_user(db, "driver", "secret", level=1, now=AT))


def _session(car: str) -> LiveSession:
    meter = MeterSession(started_ms=1_000, base_wh=7_000, samples=[(1_000, 7_000), (61_000, 7_500)], wraps=1)
    return LiveSession(car, "F1", "F1", 1, Fraction(5), "order-1", meter, command_id="c1", ending="cancel")


async def test_a_change_commits_rows_state_and_sessions_together(uow):
    user = await _user(uow)
    changes = Changes()
    changes.write(lambda r: r.charging.add_request("car1", user, "F1", "fast", Fraction(5), None, AT))
    changes.notify(Notice(user, "queue_update", "叫号", "text", "car1", AT))
    changes.command("F1", 1, "start", {"energy_Wh": 5000}, "car1")
    await changes.commit(uow, {"scheduler": {"v": 1}}, [_session("car1")], [], AT)

    state = await uow.read(lambda r: r.charging.scheduler_state())
    sessions = await uow.read(lambda r: r.charging.live_sessions())
    requests = await uow.read(lambda r: r.charging.active_requests())
    assert state == {"scheduler": {"v": 1}}
    assert sessions == [_session("car1")]
    assert [(q.car, q.user_id, q.created_at) for q in requests] == [("car1", user, AT)]
    assert changes.commands[0].op == "start"


async def test_a_change_that_fails_leaves_nothing_behind(uow):
    user = await _user(uow)
    changes = Changes()
    changes.write(lambda r: r.charging.add_request("car1", user, "F1", "fast", Fraction(5), None, AT))

    def fail(_: Repositories) -> None:
        raise ValueError("boom")

    changes.write(fail)
    with pytest.raises(ValueError, match="boom"):
        await changes.commit(uow, {"scheduler": {}}, [], [], AT)
    assert await uow.read(lambda r: r.charging.scheduler_state()) is None
    assert await uow.read(lambda r: r.charging.active_requests()) == []


async def test_an_ended_session_is_deleted(uow):
    user = await _user(uow)
    await uow.write(lambda r: r.charging.add_request("car1", user, "F1", "fast", Fraction(5), None, AT))
    await Changes().commit(uow, {}, [_session("car1")], [], AT)
    await Changes().commit(uow, {}, [], ["car1"], AT)
    assert await uow.read(lambda r: r.charging.live_sessions()) == []


async def test_a_billed_segment_reads_back_as_its_detail_record(uow):
    user = await _user(uow)
    await uow.write(lambda r: r.charging.add_request("car1", user, "F1", "fast", Fraction(5), None, AT))
    order = SessionOrder("order-1", user, "car1", "F1", 1, AT)
    start = AT - timedelta(hours=1)
    periods = {Period.VALLEY: PeriodCharge(Fraction(5), Fraction(1), Fraction(2))}
    detail = DetailRecord("d1", "car1", "F1", "F1", "F1", start, AT, AT, periods, Fraction(4), "completed")
    await uow.write(lambda r: r.charging.finish_session_order(order, detail, 12_000))
    stored = await uow.store.read(lambda db: db.execute("SELECT detail FROM orders").fetchone()[0])
    assert stored_detail(stored) == detail
    assert stored_detail(None) is None
