"""Evaluation (``caso eval``): metrics, feature backbones, pairing of inputs and edits, the HTML report, oracles."""
