"""speaker package."""
