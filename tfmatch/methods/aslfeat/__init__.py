"""aslfeat (filled in by its issue)."""
