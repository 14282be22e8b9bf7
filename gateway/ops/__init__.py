"""Operator commands: reconcile, the data epoch, and lookups that sign for the operator."""
