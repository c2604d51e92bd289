"""Seeds the sample people into the local stores the sample data map names.

Ada has data everywhere, Grace also has invoices (kept for tax law: her Delete is CannotDeleteData),
Linus has only an account. Nobody else exists: a request for anyone else is UserNotFound.
"""

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from google.cloud import firestore, storage  # type: ignore[attr-defined]

from infra.fake_mineos import Person

DATA_MAP = Path(__file__).with_name("datamap.yaml")
UPLOADS_BUCKET = "mineos-sample-uploads"

ADA = Person(
    name="Ada Lovelace", email="ada@example.com", internal_id="cust-1001", phone_number="+44 20 7946 0001"
)
GRACE = Person(name="Grace Hopper", email="grace@example.com", internal_id="cust-1002")
LINUS = Person(name="Linus Example", email="linus@example.com", internal_id="cust-1003")
UNKNOWN = Person(name="Nobody Known", email="nobody@example.com", internal_id="cust-9999")
PEOPLE = (ADA, GRACE, LINUS)

SCHEMA = """
CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT, plan TEXT, created_at TEXT,
                       password_hash TEXT);
CREATE INDEX accounts_email ON accounts (email);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id TEXT, shipping_name TEXT, shipping_address TEXT,
                     total_cents INTEGER, ordered_at TEXT);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE TABLE invoices (id INTEGER PRIMARY KEY, email TEXT NOT NULL, number TEXT, total_cents INTEGER);
CREATE INDEX invoices_email ON invoices (email);
"""


def seed_sqlite(database_path: Path) -> None:
    database_path.unlink(missing_ok=True)
    with sqlite3.connect(database_path) as connection:
        connection.executescript(SCHEMA)
        connection.executemany(
            "INSERT INTO accounts (email, name, plan, created_at, password_hash) VALUES (?, ?, ?, ?, ?)",
            [
                (ADA.email, ADA.name, "pro", "2024-03-01T10:00:00Z", "not-exported"),
                (GRACE.email, GRACE.name, "team", "2023-07-15T08:30:00Z", "not-exported"),
                (LINUS.email, LINUS.name, "free", "2025-01-20T12:00:00Z", "not-exported"),
            ],
        )
        connection.executemany(
            "INSERT INTO orders (customer_id, shipping_name, shipping_address, total_cents, ordered_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (ADA.internal_id, ADA.name, "12 Analytical Row, London", 4200, "2026-10-01T09:00:00Z"),
                (ADA.internal_id, ADA.name, "12 Analytical Row, London", 1999, "2026-11-12T16:20:00Z"),
                (GRACE.internal_id, GRACE.name, "1 Compiler Way, Arlington", 9900, "2026-09-03T11:00:00Z"),
            ],
        )
        connection.execute(
            "INSERT INTO invoices (email, number, total_cents) VALUES (?, ?, ?)",
            (GRACE.email, "INV-2026-0042", 9900),
        )


def seed_firestore(client: firestore.Client) -> None:
    now = datetime.now(UTC)
    for person in PEOPLE[:2]:
        profile = client.collection("profiles").document()
        profile.set({"email": person.email, "display_name": person.name, "language": "en", "updated_at": now})
        profile.collection("devices").document().set({"kind": "phone", "registered_at": now})


def seed_uploads(client: storage.Client) -> None:
    bucket = client.bucket(UPLOADS_BUCKET)
    if not bucket.exists(timeout=10):
        client.create_bucket(UPLOADS_BUCKET, timeout=10)
    blob = bucket.blob(f"users/{ADA.internal_id}/avatar.txt")
    blob.upload_from_string(b"(a small picture of Ada)", content_type="text/plain", timeout=10)


def seed_all(database_path: Path, project: str) -> None:
    """Seed every sample store; the emulator hosts come from the environment."""
    seed_sqlite(database_path)
    seed_firestore(firestore.Client(project=project))
    seed_uploads(storage.Client(project=project))
