"""Load tests and the benchmark: payload generators, a load generator process, and `pushgw bench`."""
