"""An OpenAI-compatible HTTP gateway in front of the key pool: any program that takes a `base_url` uses the pool.

    python -m llms serve --port 8000        # then OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=TOKEN)

Its own package, outside `llms`, so the web stack (Starlette, uvicorn, prometheus_client) is imported only by
`serve`: `import llms` stays light. It talks to the pool only through `SmartClient`'s public API.
"""
