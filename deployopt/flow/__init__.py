"""The verbs that chain stages: ``build`` (a loop over a plan of steps), pipeline files, and the demo."""
