"""Formatting of `receiver report` output: tables for a terminal, CSV and JSON for scripts."""
