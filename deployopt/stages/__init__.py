"""The stages of a build: each one transform behind the :class:`~deployopt.stages.base.Step` interface."""
