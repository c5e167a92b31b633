"""The browser client's static files, served at ``/``."""
