"""Benchmarks of the chest X-ray models (a repo tool: python -m benchmarks); not part of the installed runtime."""
