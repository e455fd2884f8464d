"""contextdesc (filled in by its issue)."""
