"""External engines (not ports of ours) that join the matrix with the same
``load(weights, dtype) -> model`` / ``predict(model, x) -> logits`` interface."""
