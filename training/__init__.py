"""Trainer: DataModule, curriculum sampler, LightningModule, generation, evaluation."""
