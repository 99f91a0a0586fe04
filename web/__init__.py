"""The Flask application: web UI, REST API and webhook endpoints."""
