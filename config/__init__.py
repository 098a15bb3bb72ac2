"""Configuration: API keys and settings read once from the environment and `.env`."""
