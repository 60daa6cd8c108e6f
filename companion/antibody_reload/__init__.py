"""Antibody's reload companion for Flask / Flask-SocketIO apps (see README.md)."""
from .companion import Companion

__all__ = ["Companion"]
__version__ = "0.1.0"
