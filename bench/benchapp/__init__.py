"""Bench-only Django app: the job types bench/peers.py runs on our side, and an optional SQL statement counter."""
