"""HTTP layer: routes (one module per resource) and the helpers they share."""
