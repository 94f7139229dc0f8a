"""The Marketing Cloud token API: ASGI app, authentication, wire schemas, metrics."""

from .app import TokenApi
from .auth import Authenticator, register_client, rotate_secret
from .schemas import openapi_document

__all__ = ["Authenticator", "TokenApi", "openapi_document", "register_client", "rotate_secret"]
