"""A simulator of the WeChat Official Account API (tokens, template sends, faults), served over real HTTP."""
