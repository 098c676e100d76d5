"""The Typer command-line shell. Each command group lives in its own module."""
