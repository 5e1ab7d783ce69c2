"""Schema-driven fuzzing of the running central service: no operation of either REST API answers 5xx.

A real Mosquitto and a real ``pilegate central`` process (with the ``admin`` super administrator);
schemathesis reads /api/openapi.json and sends every operation of the driver API and the operator
platform API valid and invalid data (examples, coverage and fuzzing phases, at most
:data:`MAX_EXAMPLES` cases per operation, fixed seed) with the admin's token, checking only
``not_a_server_error``. Logout is left out of the run (it would revoke the token the run uses) and
is called once at the end instead. The driver API and the operator platform's accounts, station,
pile and port routes are also held to their document: every status they answer is declared, and
every body fits the declared schema. A failure prints schemathesis' report
(operation, input, a curl line) and the central's "unexpected error" log lines (with their
tracebacks).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.e2e.harness import Api, CentralProcess, start_central

pytestmark = pytest.mark.e2e
ADMIN_PASSWORD = "fuzz-admin-pw-1"
MAX_EXAMPLES = 20
RUN_TIMEOUT_S = 150.0
PLATFORM_PATHS = ("/api/Users", "/api/UserRoles", "/api/UserAddresses/{id}", "/api/UserNotifications")
LEFT_OUT = ("/api/auth/logout/",)
DRIVER_PATHS = r"^/api/(auth|charging)/"
ACCOUNTS_PATHS = r"^/api/(Users|UserRoles|UserAddresses|UserNotifications)(/|$)"
CONFORMANCE = "not_a_server_error,status_code_conformance,response_schema_conformance"


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralProcess]:
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto")
    broker.start()
    try:
        running = start_central(tmp_path, broker.port, admin_password=ADMIN_PASSWORD)
        try:
            yield running
        finally:
            running.proc.stop()
    finally:
        broker.stop()


def admin_token(url: str) -> str:
    status, body = Api(url).call("POST", "/api/Users/login", {"openId": "admin", "password": ADMIN_PASSWORD})
    assert status == 200, body
    return str(body["token"])


def operations(url: str) -> list[tuple[str, str]]:
    with urllib.request.urlopen(f"{url}/api/openapi.json", timeout=10) as response:
        document: dict[str, Any] = json.loads(response.read())
    return [(method.upper(), path) for path, item in document["paths"].items() for method in item]


def run_schemathesis(
    url: str, token: str, workdir: Path, checks: str = "not_a_server_error", *only: str
) -> subprocess.CompletedProcess[str]:
    """The schemathesis CLI, run in ``workdir`` (its caches and report stay out of the repository);
    ``only`` adds filter options."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/api/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", checks, *only,
        "--max-examples", str(MAX_EXAMPLES), "--seed", "4",
        "--phases", "examples,coverage,fuzzing", "--mode", "all",
        "--workers", "1", "--request-timeout", "10", "--no-shrink",
        "--suppress-health-check", "all",
        *(arg for path in LEFT_OUT for arg in ("--exclude-path", path)),
        "--report", "junit", "--report-dir", str(workdir / "report"),
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False, cwd=workdir
    )


def server_errors(log: str) -> str:
    """The central's log records of unexpected errors (JSON lines with their tracebacks)."""
    return "\n".join(line for line in log.splitlines() if "unexpected error" in line)[-8000:]


def test_no_operation_of_either_api_answers_a_server_error(central: CentralProcess, tmp_path: Path) -> None:
    pytest.importorskip("schemathesis", reason="pip install 'schemathesis>=3.30' (test extras)")
    ops = operations(central.url)
    missing = [p for p in PLATFORM_PATHS if p not in {path for _method, path in ops}]
    assert not missing, f"the central does not serve the operator platform API: {missing} not documented"
    token = admin_token(central.url)
    result = run_schemathesis(central.url, token, tmp_path)
    assert central.proc.alive(), central.proc.log()[-4000:]
    report = (result.stdout + result.stderr)[-12000:]
    assert result.returncode == 0, f"{report}\n--- central errors ---\n{server_errors(central.proc.log())}"
    expected = [op for op in ops if op[1] not in LEFT_OUT and op[1] != "/api/openapi.json"]
    tested = re.search(r"Tested:\s+(\d+)", report)  # schemathesis leaves the document itself out
    assert tested is not None and int(tested[1]) == len(expected), report
    assert Api(central.url, token).call("POST", "/api/auth/logout/")[0] == 200


def test_the_driver_api_answers_only_what_its_document_declares(
    central: CentralProcess, tmp_path: Path
) -> None:
    pytest.importorskip("schemathesis", reason="pip install 'schemathesis>=3.30' (test extras)")
    token = admin_token(central.url)
    result = run_schemathesis(central.url, token, tmp_path, CONFORMANCE, "--include-path-regex", DRIVER_PATHS)
    report = (result.stdout + result.stderr)[-12000:]
    assert result.returncode == 0, f"{report}\n--- central errors ---\n{server_errors(central.proc.log())}"
    expected = [
        op for op in operations(central.url) if re.match(DRIVER_PATHS, op[1]) and op[1] not in LEFT_OUT
    ]
    tested = re.search(r"Tested:\s+(\d+)", report)
    assert tested is not None and int(tested[1]) == len(expected), report


STATION_PATHS = r"^/api/Charging(Stations|Piles|Ports)"


@pytest.mark.parametrize("paths", [ACCOUNTS_PATHS, STATION_PATHS], ids=["accounts", "stations"])
def test_the_platform_routes_answer_only_what_their_document_declares(
    central: CentralProcess, tmp_path: Path, paths: str
) -> None:
    pytest.importorskip("schemathesis", reason="pip install 'schemathesis>=3.30' (test extras)")
    token = admin_token(central.url)
    result = run_schemathesis(central.url, token, tmp_path, CONFORMANCE, "--include-path-regex", paths)
    report = (result.stdout + result.stderr)[-12000:]
    assert result.returncode == 0, f"{report}\n--- central errors ---\n{server_errors(central.proc.log())}"
    expected = [op for op in operations(central.url) if re.match(paths, op[1])]
    tested = re.search(r"Tested:\s+(\d+)", report)
    assert tested is not None and int(tested[1]) == len(expected), report
