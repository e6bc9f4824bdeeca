"""OpenAI-compatible HTTP server: FastAPI routes (app), model worker (runner), batching (scheduler)."""
