"""Below the app: connection admission and deadlines (uvicorn protocol
subclasses), ASGI middleware, and the uvicorn configuration.
"""
