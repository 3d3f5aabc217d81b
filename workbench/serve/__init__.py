"""Serving the loaded model to other programs through an OpenAI-compatible HTTP API.

`api.ApiServer` is the HTTP side (stdlib only); it hands generations to a
`backend.ServeBackend`, which queues them on the one engine. `backend.EngineBackend` runs
them on any `Engine` (headless: `python -m workbench.serve`); the GUI has its own backend
on top of its EngineController, so the chat window and the server share one engine.
"""
