"""Plays MineOS against a running local stack: sends signed calls, waits for the status reports.

The demo, the end-to-end tests and the benchmarks drive the stack through this one module.
"""

import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests

from infra.fake_mineos import MineCall, Person, build_call, send_call
from infra.stack import LocalStack
from mineos_integration.contract import Action

ROUTES = {Action.COPY: "/copy", Action.DELETE: "/delete", Action.PREVIEW: "/preview"}
INTEGRATION_ID = "sample-custom-system"


class ReportTimeout(AssertionError):
    """No status call arrived for an operation in time."""


@dataclass
class StackDriver:
    stack: LocalStack
    integration_id: str = INTEGRATION_ID

    @property
    def fake_mineos(self) -> str:
        return self.stack.fake_mineos_url

    def call(self, action: Action, person: Person, **options: Any) -> MineCall:
        return build_call(action, person, integration_id=self.integration_id, **options)

    def send(self, call: MineCall, timeout_seconds: float = 30.0) -> requests.Response:
        """Register the operation in the fake MineOS's ticket log, then send the signed call."""
        if call.action is not Action.PREVIEW:
            requests.post(
                f"{self.fake_mineos}/_fake/operations",
                json={
                    "ticketId": call.ticket_id,
                    "integrationId": call.integration_id,
                    "action": call.action,
                },
                timeout=10,
            ).raise_for_status()
        url = self.stack.ingress_url + ROUTES[call.action]
        return send_call(url, call, self.stack.signing_secret, timeout=timeout_seconds)

    def status_calls(self) -> list[dict[str, Any]]:
        """Every status POST the fake MineOS received."""
        response = requests.get(f"{self.fake_mineos}/_fake/calls", timeout=10)
        response.raise_for_status()
        calls: list[dict[str, Any]] = response.json()
        return calls

    def reports_for(self, call: MineCall) -> list[dict[str, Any]]:
        return [
            c
            for c in self.status_calls()
            if c["ticketId"] == call.ticket_id and c["integrationId"] == call.integration_id
        ]

    def wait_for_report(self, call: MineCall, timeout_seconds: float = 60.0) -> dict[str, Any]:
        """The first accepted status call for `call`'s operation; raises ReportTimeout."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            accepted = [c for c in self.reports_for(call) if c["responseStatus"] == 200]
            if accepted:
                return accepted[0]
            time.sleep(0.1)
        raise ReportTimeout(f"no status call for trace {call.trace_id} within {timeout_seconds} s")

    def reports_per_operation(self) -> Counter[tuple[str, str]]:
        return Counter((c["ticketId"], c["integrationId"]) for c in self.status_calls())

    def inject_faults(self, faults: list[dict[str, Any]]) -> None:
        requests.post(
            f"{self.fake_mineos}/_fake/faults", json={"faults": faults}, timeout=10
        ).raise_for_status()


def download_and_check(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Fetch every file of a Copy report through its signed URL and check it against the manifest.

    Returns the manifest's file entries; raises AssertionError on a missing file or a wrong SHA-256.
    """
    files = {f["fileName"]: f["url"] for f in report["body"].get("files") or []}
    manifest = requests.get(files.pop("manifest.json"), timeout=30).json()
    for entry in manifest["files"]:
        content = requests.get(files[entry["fileName"]], timeout=60).content
        digest = hashlib.sha256(content).hexdigest()
        if digest != entry["sha256"] or len(content) != entry["bytes"]:
            raise AssertionError(f"{entry['fileName']}: downloaded file does not match the manifest")
    return list(manifest["files"])
