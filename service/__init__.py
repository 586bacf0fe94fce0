"""The web service: wires model.encoder and index into a FastAPI app, a search page and a CLI."""
