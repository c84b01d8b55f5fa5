"""The fleet REST API (FastAPI): `api.app.create_app` builds it over a `storage.Store`."""
