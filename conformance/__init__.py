"""Conformance: fixed inputs, float64 golden logits, tolerances, per-port tests, the matrix."""
