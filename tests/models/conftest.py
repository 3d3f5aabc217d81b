"""The `hub` fixture (a loopback Hugging Face Hub) lives in tests/conftest.py."""
