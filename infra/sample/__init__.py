"""The sample company: a data map and a few people seeded into SQLite, Firestore and Cloud Storage."""
