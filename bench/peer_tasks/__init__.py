"""Task modules and the driver for bench.peers, one per system; each is imported only in its system's venv."""
