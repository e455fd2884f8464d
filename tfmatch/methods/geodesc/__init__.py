"""geodesc (filled in by its issue)."""
