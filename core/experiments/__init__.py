"""A/B experiment reviews: assignments, metrics, statistics."""
