"""Services: the relay's rules. They take a session and plain values, raise domain errors."""
