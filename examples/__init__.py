"""Runnable examples (see each file and examples/shop/README.md)."""
