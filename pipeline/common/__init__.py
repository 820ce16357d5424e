"""Small pure helpers that several packages share."""
