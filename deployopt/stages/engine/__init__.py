"""stages.engine."""
