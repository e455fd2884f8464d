"""superpoint (filled in by its issue)."""
