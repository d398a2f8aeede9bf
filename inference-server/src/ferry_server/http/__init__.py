"""HTTP layer: thin FastAPI routers over the data plane."""
