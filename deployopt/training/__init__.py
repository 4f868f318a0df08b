"""``deployopt train``: the one training loop, optimizers and schedules, augmentation, logs and DDP."""
