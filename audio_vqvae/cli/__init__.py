"""Thin console apps over the library: argument parsing, then one library call."""
