"""memogrid: the thin client (see issue 4)."""
