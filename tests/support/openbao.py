"""The OpenBao dev server of the credential tests (shared with the bench: support/openbao.py)."""

from support.openbao import ROOT_TOKEN, OpenBaoServer, bao_binary  # noqa: F401
