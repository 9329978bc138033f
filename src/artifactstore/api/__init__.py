"""The REST API (DESIGN section 5): FastAPI app, one router per resource."""
