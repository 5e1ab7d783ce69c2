"""Schema-driven fuzzing of the running central service: both REST APIs against their own document.

A real Mosquitto and a real ``pilegate central`` process (with the ``admin`` super administrator);
ONE schemathesis run reads /api/openapi.json and sends every operation of the driver API and the
operator platform API valid and invalid data (examples, coverage and fuzzing phases, at most
:data:`MAX_EXAMPLES` cases per operation, fixed seed) with the admin's token, with three checks: no
operation answers 5xx (``not_a_server_error``), every status answered is declared
(``status_code_conformance``) and every body fits the declared schema
(``response_schema_conformance``). Logout is left out of the run (it would revoke the token the run
uses) and is called once at the end instead.

The run's JUnit report gives the failures of each operation. Operations whose document is known
not to declare everything yet are listed in :data:`NONCONFORMING` with the reason; each is an
expected (strict) failure, so closing one makes its test pass unexpectedly until it is taken off
the list. A server error fails the run whatever the list says. A failure prints schemathesis' report
(operation, input, a curl line) and the central's "unexpected error" log lines (with tracebacks).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.e2e.harness import Api, CentralProcess, start_central

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]  # the module fixture runs schemathesis (<= 150 s)
ADMIN_PASSWORD = "fuzz-admin-pw-1"
MAX_EXAMPLES = 5
RUN_TIMEOUT_S = 150.0
PLATFORM_PATHS = ("/api/Users", "/api/UserRoles", "/api/UserAddresses/{id}", "/api/UserNotifications")
LEFT_OUT = ("/api/auth/logout/",)
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
# The codes schemathesis gives a failed not_a_server_error check in its JUnit report ("Server error").
SERVER_ERROR_CODES = ("ST101", "ST102")

# Operations ("METHOD /path") whose answers do not yet fit their document, with what is missing.
NONCONFORMING: dict[str, str] = {}


@dataclass(frozen=True)
class FuzzRun:
    """One schemathesis run over both APIs and what it found."""

    url: str
    operations: list[str]  # "METHOD /path" of every documented operation
    tested: int | None  # operations schemathesis reports as tested
    failures: dict[str, list[str]]  # "METHOD /path" -> failures: "codes\nreport text" (JUnit)
    report: str  # the end of schemathesis' own output
    server_errors: str  # the central's "unexpected error" log lines

    def explain(self) -> str:
        return f"{self.report}\n--- central errors ---\n{self.server_errors}"


def admin_token(url: str) -> str:
    status, body = Api(url).call("POST", "/api/Users/login", {"openId": "admin", "password": ADMIN_PASSWORD})
    assert status == 200, body
    return str(body["token"])


def operations(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/api/openapi.json", timeout=10) as response:
        document: dict[str, Any] = json.loads(response.read())
    return [f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item]


def run_schemathesis(url: str, token: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """The schemathesis CLI, run in ``workdir`` (its caches and report stay out of the repository)."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/api/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES), "--seed", "4",
        "--phases", "examples,coverage,fuzzing", "--mode", "all",
        "--workers", "1", "--request-timeout", "10", "--no-shrink",
        "--suppress-health-check", "all",
        *(arg for path in LEFT_OUT for arg in ("--exclude-path", path)),
        "--report", "junit", "--report-junit-path", str(workdir / "junit.xml"),
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False, cwd=workdir
    )


def junit_failures(path: Path) -> dict[str, list[str]]:
    """The failures and errors of each operation ("METHOD /path") in schemathesis' JUnit report: the
    failure codes (its ``message``) and the report text with a curl line, one string each."""
    failures: dict[str, list[str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314 - our own run's report
        for failure in [*case.iter("failure"), *case.iter("error")]:
            text = f"{failure.get('message') or ''}\n{failure.text or ''}"
            failures.setdefault(str(case.get("name")), []).append(text)
    return failures


def server_errors(log: str) -> str:
    """The central's log records of unexpected errors (JSON lines with their tracebacks)."""
    return "\n".join(line for line in log.splitlines() if "unexpected error" in line)[-8000:]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzRun]:
    pytest.importorskip("schemathesis", reason="pip install 'schemathesis>=4' (test extras)")
    workdir = tmp_path_factory.mktemp("fuzz")
    broker = MosquittoBroker(free_port(), workdir / "mosquitto")
    broker.start()
    try:
        central = start_central(workdir, broker.port, admin_password=ADMIN_PASSWORD)
        try:
            yield fuzzed(central, workdir)
        finally:
            central.proc.stop()
    finally:
        broker.stop()


def fuzzed(central: CentralProcess, workdir: Path) -> FuzzRun:
    """Run schemathesis once against ``central``; the token is still valid afterwards (logout is left out)."""
    token = admin_token(central.url)
    result = run_schemathesis(central.url, token, workdir)
    assert central.proc.alive(), central.proc.log_tail()
    report = (result.stdout + result.stderr)[-12000:]
    junit = workdir / "junit.xml"
    assert junit.exists(), report
    tested = re.search(r"Tested:\s+(\d+)", report)
    assert Api(central.url, token).call("POST", "/api/auth/logout/")[0] == 200
    return FuzzRun(
        central.url,
        operations(central.url),
        int(tested[1]) if tested else None,
        junit_failures(junit),
        report,
        server_errors(central.proc.log()),
    )


def test_both_apis_are_documented_and_every_operation_is_fuzzed(fuzz: FuzzRun) -> None:
    paths = {op.split(" ", 1)[1] for op in fuzz.operations}
    missing = [p for p in PLATFORM_PATHS if p not in paths]
    assert not missing, f"the central does not serve the operator platform API: {missing} not documented"
    assert any(p.startswith("/api/charging/") for p in paths), "the driver API is not documented"
    expected = [op for op in fuzz.operations if op.split(" ", 1)[1] not in (*LEFT_OUT, "/api/openapi.json")]
    assert fuzz.tested == len(expected), fuzz.report  # schemathesis leaves the document itself out
    unknown = sorted(set(NONCONFORMING) - set(fuzz.operations))
    assert not unknown, f"NONCONFORMING names operations that do not exist: {unknown}"


def test_no_operation_answers_a_server_error(fuzz: FuzzRun) -> None:
    crashed = {
        op: msgs
        for op, msgs in fuzz.failures.items()
        if any(code in m for m in msgs for code in SERVER_ERROR_CODES)
    }
    assert not crashed, f"{sorted(crashed)}\n{fuzz.explain()}"


def test_every_operation_answers_what_its_document_declares(fuzz: FuzzRun) -> None:
    failing = {op: msgs for op, msgs in fuzz.failures.items() if op not in NONCONFORMING}
    assert not failing, f"{json.dumps(failing, indent=1, ensure_ascii=False)[:6000]}\n{fuzz.explain()}"


@pytest.mark.parametrize(
    "operation",
    [pytest.param(op, marks=pytest.mark.xfail(strict=True, reason=why)) for op, why in NONCONFORMING.items()]
    or [pytest.param("", marks=pytest.mark.skip(reason="no operation is known not to conform"))],
)
def test_a_known_nonconforming_operation_still_fails(fuzz: FuzzRun, operation: str) -> None:
    """Each listed operation is expected to fail; once it passes, take it off :data:`NONCONFORMING`."""
    assert operation not in fuzz.failures, fuzz.failures[operation]
