"""Delivery: stream consumers that render and send WeChat template messages, with retries and dead letters."""
