"""Live events for the dashboard (filled in by the live-feed work)."""
