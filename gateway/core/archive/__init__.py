"""The PostgreSQL archive of every alert's final state: rows.py (the row format), schema.py (migrations,
partitions, retention), store.py (writes, lookups, erasure), server.py (a local PostgreSQL for `pushgw
dev`, the tests and the benchmark). Workers write it (workers/archive.py); the gateway reads it
(gateway/archived.py).
"""
