"""Transaction coordinator."""
