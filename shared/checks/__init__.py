"""Per-message checks that do not need the book: timing and funding."""
