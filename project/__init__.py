"""The demo Django project: shows how a site installs and uses the ``jobs`` app."""
