"""The handbook chapter's supervised models, and the building blocks the agent reuses."""
