"""Benchmarks that print a report (see README: Benchmarks)."""
