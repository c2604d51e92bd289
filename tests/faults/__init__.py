"""Test-only functions-framework sources for fault injection; nothing here is deployed."""
