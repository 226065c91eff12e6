"""The Web UI and its JSON API: the only package that imports the web stack."""

from minifaktory.webui.app import create_app

__all__ = ["create_app"]
