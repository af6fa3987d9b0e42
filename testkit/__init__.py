"""Test infrastructure shared by tests/ and bench/: processes, HTTP and SMTP receivers, fake exchanges.

bench/ and tests/ import it; it imports neither, so the dependency runs one way."""
