"""Figures and notebook widgets (``plots``, ``widgets``)."""
