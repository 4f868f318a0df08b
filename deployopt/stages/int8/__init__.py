"""stages.int8."""
