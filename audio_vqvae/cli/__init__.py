"""Thin console apps: argument parsing and calls into the library."""
