"""Material for tests and the demo that the project makes itself (no downloads)."""
