"""The toy world: procedural faces with exactly known attributes, their oracle and the small model."""
