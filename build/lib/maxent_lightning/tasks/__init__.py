"""Tasks dispatched by ``cfg.task``."""
