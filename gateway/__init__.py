"""pushgw: the ingress gateway, and (in gateway.core) what gateway and workers share."""
