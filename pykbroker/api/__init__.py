"""pykbroker."""
