"""Key state: the rule book (rules), the store seam (base), the in-memory store (memory)."""
