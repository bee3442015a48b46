"""What `agent` and `classic` both need, below both: one-line user errors and the CLI wrapper, atomic file writes.

Imports nothing of ours; keeps `classic` free of `agent` (dependencies point agent -> classic -> common).
"""
