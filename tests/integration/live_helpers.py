"""What the live-rule tests share: submitting a driver's request, the commands sent to a pile, and
whether every update the live input scheduled has run. They take the ``central`` fixture of
``tests.integration.central_fixtures``."""

from __future__ import annotations

from typing import Any


async def submit(central: Any, account: Any, mode: str = "fast", kwh: float = 20) -> Any:
    body = {"charging_mode": mode, "requested_amount": kwh}
    status, reply = await central.call("POST", "/api/charging/request/", user=account, json=body)
    assert status == 201, reply
    return reply["data"]["request_id"]


def ops(central: Any, pile: str) -> list[str]:
    return [c[2] for c in central.commands.sent if c[0] == pile]


def handled(central: Any) -> bool:
    """Every update the live input scheduled has run (its start-up watch for silent piles aside)."""
    return all(t.get_name() == "silent-piles" for t in central.service.live.tasks)
