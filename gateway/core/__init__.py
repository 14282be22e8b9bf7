"""What the gateway and the workers share: settings, event model, Redis keys and scripts, metrics."""
