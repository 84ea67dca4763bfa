"""Benchmarks of opskit against a bare FastAPI app and the peer libraries; ``python -m bench``."""
