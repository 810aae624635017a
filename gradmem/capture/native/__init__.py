"""The native capture engine: a small C++ extension, built on first use (see loader.py)."""
