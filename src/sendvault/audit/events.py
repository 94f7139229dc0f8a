"""The closed vocabulary of audit events. Every record names one; nothing else is accepted."""

from __future__ import annotations

import enum

__all__ = ["Event"]


class Event(enum.StrEnum):
    """What happened. Values are stored; never rename one."""

    MC_RESOLVE = "mc:resolve"
    MC_GET_TOKEN = "mc:get-token"
    OAUTH_TOKEN = "oauth:token"
    AUTH_FAIL = "auth:fail"
    API_REQUEST = "api:request"
    CLIENT_ADD = "client:add"
    CLIENT_REMOVE = "client:remove"
    CLIENT_ROTATE = "client:rotate-secret"
    KEY_ROTATE = "key:rotate"
    KEY_REENCRYPT = "key:reencrypt"
    KEY_RETIRE = "key:retire"
    VAULT_BACKUP = "vault:backup"
    VAULT_RESTORE = "vault:restore"
    TOKEN_CREATE = "token:create"
    TOKEN_RESOLVE = "token:resolve"
    CONTACT_ATTRS = "contact:attrs"
    CONTACT_ERASE = "contact:erase"
    EXCHANGE_TRANSFER = "exchange:transfer"
    EXCHANGE_SWEEP = "exchange:sweep"
    EXCHANGE_TOKENIZE = "exchange:tokenize"
    EXCHANGE_DETOKENIZE = "exchange:detokenize"
    EXCHANGE_CHECK = "exchange:check"
    EXCHANGE_STATUS = "exchange:status"
    AUDIT_PURGE = "audit:purge"
    AUDIT_KEYS_ROTATE = "audit:keys-rotate"
