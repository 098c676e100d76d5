"""Library pipelines: no printing, no argv; progress goes through callbacks."""
