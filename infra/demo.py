"""The whole pipeline on the local emulators with the sample company's data: `make demo`.

Starts the local stack, seeds the sample people, then plays MineOS: a signed Copy for Ada (the 202,
the published message, the status call MineOS received, every file downloaded through its signed
URL and checked against the manifest), a Copy for an unknown person, a test call, a Preview, a
Delete for Linus (the receipt, the status call) followed by a Copy for him that finds nothing, and
a Delete for Grace whose invoices are kept by law. Stops everything it started.
"""

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from google.cloud import firestore, pubsub_v1  # type: ignore[attr-defined]

from infra.driver import StackDriver, download_and_check
from infra.fake_mineos import MineCall
from infra.sample.seed import ADA, DATA_MAP, GRACE, LINUS, UNKNOWN, seed_all
from infra.stack import LocalStack, StackConfig, StackPorts, start_stack
from mineos_integration.contract import Action, parse_request
from mineos_integration.ledger import operation_id

TAP_SUBSCRIPTION = "demo-tap"


def show(title: str, value: Any = None) -> None:
    print(f"\n== {title}")
    if value is not None:
        print(
            json.dumps(value, indent=2, default=str, ensure_ascii=False)
            if not isinstance(value, str)
            else value
        )


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The status call as MineOS received it, with signed URLs shortened for the screen."""
    body = dict(report["body"])
    if body.get("files"):
        body["files"] = [{**f, "url": f["url"].split("?")[0] + "?X-Goog-Signature=…"} for f in body["files"]]
    return {"responseStatus": report["responseStatus"], "body": body}


def show_published_message(stack: LocalStack) -> None:
    subscriber = pubsub_v1.SubscriberClient()
    subscription = subscriber.subscription_path(stack.config.project, TAP_SUBSCRIPTION)
    response = subscriber.pull(subscription=subscription, max_messages=1, timeout=10)
    for received in response.received_messages:
        subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
        data = json.loads(received.message.data)
        show(
            "Published to Pub/Sub (attributes; data holds the normalised request)",
            {"attributes": dict(received.message.attributes), "data fields": sorted(data)},
        )


def ledger_document(stack: LocalStack, call: MineCall) -> dict[str, Any]:
    request = parse_request(call.action, call.body)
    client = firestore.Client(project=stack.config.project)
    snapshot = client.collection("mineos_operations").document(operation_id(request)).get()
    return snapshot.to_dict() or {}


def run_scenarios(stack: LocalStack) -> None:
    driver = StackDriver(stack)

    copy = driver.call(Action.COPY, ADA)
    response = driver.send(copy)
    show(f"POST /copy for Ada → {response.status_code}", response.json())
    show_published_message(stack)
    started = time.monotonic()
    report = driver.wait_for_report(copy)
    show(f"Status call MineOS received after {time.monotonic() - started:.1f} s", summary(report))
    files = download_and_check(report)
    show(
        "Every file downloaded through its signed URL; SHA-256 matches the manifest",
        [{k: f[k] for k in ("fileName", "records", "bytes", "sha256")} for f in files],
    )
    driver.send(copy)  # MineOS retries: the same call again
    time.sleep(2)
    show("The same Copy sent again: status calls for it", len(driver.reports_for(copy)))

    unknown = driver.call(Action.COPY, UNKNOWN)
    driver.send(unknown)
    show("Copy for an unknown person", summary(driver.wait_for_report(unknown)))

    test_call = driver.call(Action.COPY, ADA, is_test=True)
    driver.send(test_call)
    show("MineOS 'test your integration' call", summary(driver.wait_for_report(test_call)))

    preview = driver.send(driver.call(Action.PREVIEW, ADA))
    show(f"Preview for Ada → {preview.status_code}", preview.json())

    delete = driver.call(Action.DELETE, LINUS)
    show(f"POST /delete for Linus → {driver.send(delete).status_code}")
    show("Status call MineOS received", summary(driver.wait_for_report(delete)))
    show("Deletion receipt in the ledger (counts only)", ledger_document(stack, delete)["outcome"]["receipt"])
    after = driver.call(Action.COPY, LINUS)
    driver.send(after)
    show("Copy for Linus after the delete", summary(driver.wait_for_report(after)))

    kept = driver.call(Action.DELETE, GRACE)
    driver.send(kept)
    show("Delete for Grace (invoices kept by law)", summary(driver.wait_for_report(kept)))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mineos-demo-") as folder:
        state_dir = Path(folder)
        database_url = f"sqlite:///{state_dir / 'sample.db'}"
        config = StackConfig(
            state_dir=state_dir,
            ports=StackPorts.free(),
            data_map_path=str(DATA_MAP),
            extra_pull_subscription=TAP_SUBSCRIPTION,
            extra_env={"SAMPLE_DATABASE_URL": database_url},
            seed=lambda stack: seed_all(database_url, stack.use_emulators()),
        )
        print("Starting the local stack (Pub/Sub, Firestore, fake-gcs-server, fake MineOS, services)…")
        with start_stack(config, lambda name, seconds: print(f"  {name} ready in {seconds:.1f} s")) as stack:
            try:
                run_scenarios(stack)
            except Exception:
                print("\nThe demo failed; the collector's log ends with:", file=sys.stderr)
                print(stack.processes["collector"].log_tail(), file=sys.stderr)
                raise
    print("\nDone: everything the demo started is stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
