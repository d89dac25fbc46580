"""Real credentials in target systems: the port (``port.py``), the core's side of it
(``service.py``) and the plugins shipped with jitgate (``postgresql.py``)."""

from .port import CredentialPlugin, CredentialUnavailable, Grant, IssueFailed, Issued, RevokeFailed
from .service import Binding, Credentials, PluginContext, load_plugins

__all__ = ["Binding", "CredentialPlugin", "CredentialUnavailable", "Credentials", "Grant", "IssueFailed", "Issued", "PluginContext",
           "RevokeFailed", "load_plugins"]
