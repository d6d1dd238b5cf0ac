"""Runnable examples of taskq (``make demo`` runs :mod:`examples.demo`)."""
