"""Seeds the sample people into the local stores the sample data map names.

Ada has data everywhere, Grace also has invoices (kept for tax law: her Delete is CannotDeleteData),
Linus has only an account. Nobody else exists: a request for anyone else is UserNotFound.
"""

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
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

METADATA = sa.MetaData()
ACCOUNTS = sa.Table(
    "accounts",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.Text, nullable=False, index=True),
    sa.Column("name", sa.Text),
    sa.Column("plan", sa.Text),
    sa.Column("created_at", sa.Text),
    sa.Column("password_hash", sa.Text),  # never exported: not in the data map's columns
)
ORDERS = sa.Table(
    "orders",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("customer_id", sa.Text, index=True),
    sa.Column("shipping_name", sa.Text),
    sa.Column("shipping_address", sa.Text),
    sa.Column("total_cents", sa.Integer),
    sa.Column("ordered_at", sa.Text),
)
INVOICES = sa.Table(
    "invoices",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.Text, nullable=False, index=True),
    sa.Column("number", sa.Text),
    sa.Column("total_cents", sa.Integer),
)


def seed_database(url: str) -> None:
    """(Re)create the sample tables in the database at `url` (SQLite or PostgreSQL) and fill them."""
    engine = sa.create_engine(url)
    try:
        METADATA.drop_all(engine)
        METADATA.create_all(engine)
        with engine.begin() as connection:
            connection.execute(
                ACCOUNTS.insert(),
                [
                    {
                        "email": ADA.email,
                        "name": ADA.name,
                        "plan": "pro",
                        "created_at": "2024-03-01T10:00:00Z",
                    },
                    {
                        "email": GRACE.email,
                        "name": GRACE.name,
                        "plan": "team",
                        "created_at": "2023-07-15T08:30:00Z",
                    },
                    {
                        "email": LINUS.email,
                        "name": LINUS.name,
                        "plan": "free",
                        "created_at": "2025-01-20T12:00:00Z",
                    },
                ],
            )
            connection.execute(
                ORDERS.insert(),
                [
                    _order(ADA, "12 Analytical Row, London", 4200, "2026-10-01T09:00:00Z"),
                    _order(ADA, "12 Analytical Row, London", 1999, "2026-11-12T16:20:00Z"),
                    _order(GRACE, "1 Compiler Way, Arlington", 9900, "2026-09-03T11:00:00Z"),
                ],
            )
            connection.execute(
                INVOICES.insert(), [{"email": GRACE.email, "number": "INV-2026-0042", "total_cents": 9900}]
            )
    finally:
        engine.dispose()


def _order(person: Person, address: str, total_cents: int, ordered_at: str) -> dict[str, object]:
    return {
        "customer_id": person.internal_id,
        "shipping_name": person.name,
        "shipping_address": address,
        "total_cents": total_cents,
        "ordered_at": ordered_at,
    }


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


def seed_all(database_url: str, project: str) -> None:
    """Seed every sample store; the emulator hosts come from the environment."""
    seed_database(database_url)
    seed_firestore(firestore.Client(project=project))
    seed_uploads(storage.Client(project=project))
