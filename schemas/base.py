"""The pydantic base of every typed contract and config in the project."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors and assignments are validated: a typo in a config or a model
    answer with extra keys fails loudly instead of being trimmed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
