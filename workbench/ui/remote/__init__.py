"""Remote servers in the GUI: the connection dialog, and switching the EngineController
between the local engine and an OpenAI-compatible server."""
