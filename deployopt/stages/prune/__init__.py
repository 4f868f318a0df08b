"""stages.prune."""
