"""HTTP handlers of the ingress API, one module per resource."""
