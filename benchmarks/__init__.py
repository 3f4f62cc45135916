"""Benchmarks: this library against authlib, requests-oauthlib and requests-auth.

``python -m benchmarks`` (or ``make bench``) runs every scenario on a local
fake Piggy; see docs/performance.md.
"""
