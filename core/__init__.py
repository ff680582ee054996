"""Tenure's library: the event store, the analyses and the models, usable without the app."""
