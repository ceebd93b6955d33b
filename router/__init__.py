"""Routing policy: pure functions over state folded from events. No I/O, no clock reads."""
