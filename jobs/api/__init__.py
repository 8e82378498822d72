"""The REST API of the jobs app (DRF): mount ``jobs.api.urls`` under a prefix such as ``api/``."""
