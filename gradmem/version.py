"""gradmem's version, in a module of its own so every stage can name it without importing
the package root (which wires the stages together)."""
__version__ = "0.1.0"
