"""The API server in the GUI: a queue that shares the EngineController with the chat, and
the panel that switches the server on and off."""
