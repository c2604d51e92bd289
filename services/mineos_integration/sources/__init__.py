"""Data sources: the connectors the data map can name, and the protocol they share."""
