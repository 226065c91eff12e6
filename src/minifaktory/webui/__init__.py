"""The Web UI and its JSON API: the only package that imports the web stack.

``webui.port`` binds the Web UI's port without it; the rest loads at the first
connection (``webui.app.create_app`` builds the ASGI application).
"""
