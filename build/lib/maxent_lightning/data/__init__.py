"""Data: real sources as in-memory tensors and the per-rewarded-set DataModule."""
