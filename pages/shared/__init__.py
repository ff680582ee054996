"""Widgets and cached calls shared by every page."""
