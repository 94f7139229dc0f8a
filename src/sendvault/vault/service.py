"""The Vault: tokenize, resolve, attributes and erasure over a store, a keyring and a blind index.

Lookup before normalization: the blind index only ever holds normalized values, and
normalization is idempotent, so if the index knows a value *as given*, that value was already
normalized and its token is the right one. Marketing Cloud sends values normalized, so the hot
path for existing values is one HMAC per item and one query per batch; only misses pay for
email-validator or phonenumbers.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from ..crypto import BlindIndex, KeyProvider, Keyring
from ..crypto._aead import new_key
from ..errors import CryptoError, InvalidValue, KeyProviderError, KeyProviderUnavailable, NotFound, StaleKeys
from ..store.base import ContactRow, NewContact, Store, StoredKey
from .formats import TokenFormat
from .normalize import MAX_EMAIL_LENGTH, Kind, Normalizer

__all__ = ["Resolved", "TokenPlan", "Tokenized", "Vault"]

log = logging.getLogger("sendvault.vault")

# Rounds of fresh draws for new tokens that collided with existing ones (live or erased). A
# collision is expected only once the token space fills up (mobile tokens may hold as few as 10^9):
# at a tenth full, the chance that one value still collides after 20 rounds is 10^-20.
_COLLISION_RETRIES = 20
_MAX_ATTRIBUTE_NAME = 128
_MAX_ATTRIBUTE_VALUE = 4096

_KINDS = {int(k): k for k in Kind}
# Rounds of a call whose blind-index keys changed under it (a rotation, then a retirement).
_INDEX_RETRIES = 4
_attrs_encoder = msgspec.json.Encoder()
_attrs_decoder = msgspec.json.Decoder(dict[str, str])


@dataclass(slots=True)
class Tokenized:
    """The outcome for one value: its token, or the reason it has none."""

    token: str | None
    reason: str | None = None
    created: bool = False


# Shared by every outcome without attributes; read-only through the Mapping type.
_NO_ATTRIBUTES: dict[str, str] = {}


class Resolved(NamedTuple):
    """The outcome for one token: its value and attributes, or the reason it is unresolved.

    A named tuple: a resolve batch makes 500 of them, and a tuple costs half a dataclass.
    """

    value: str | None
    kind: Kind | None = None
    attributes: Mapping[str, str] = _NO_ATTRIBUTES
    reason: str | None = None


_VALUE_PREFIX = {int(k): b"v\x00" + bytes((k,)) for k in Kind}
_ATTRS_PREFIX = {int(k): b"a\x00" + bytes((k,)) for k in Kind}


# Outcomes without a value, shared (a tuple cannot change): a resolve batch makes many.
_UNREADABLE = Resolved(None, reason="unreadable")
_UNKNOWN_TOKEN = Resolved(None, reason="unknown-token")


def _value_context(token: str, kind: int) -> bytes:
    """What a value's ciphertext is bound to: its field, kind and token."""
    return _VALUE_PREFIX[kind] + token.encode()


def _attrs_context(token: str, kind: int) -> bytes:
    """What an attribute set's ciphertext is bound to."""
    return _ATTRS_PREFIX[kind] + token.encode()


class _Index(NamedTuple):
    """The blind-index keys one call works with, taken once (a key watcher may swap them).

    ``old`` is set only while the blind-index key rotates: lookups then ask for every value under
    both keys, and new rows carry the old index too, so the store can find a row not yet moved.
    """

    key_id: int
    blind: BlindIndex
    old_id: int | None = None
    old: BlindIndex | None = None


class _Creation:
    """New tokens for a batch's unknown values, drawn again for any that collide."""

    def __init__(self, values: Iterable[tuple[Kind, str, bytes]]) -> None:
        self.wanted: dict[bytes, tuple[Kind, str]] = {}
        for kind, normalized, bidx in values:
            self.wanted.setdefault(bidx, (kind, normalized))
        self.out: dict[bytes, tuple[str, bool]] = {}
        self._mine: dict[bytes, str] = {}
        self._tries = 0

    def rows(self, token_format: TokenFormat, keyring: Keyring, index: _Index) -> list[NewContact]:
        """Fresh tokens and sealed values for everything still wanted."""
        self._tries += 1
        if self._tries > _COLLISION_RETRIES:
            # Only with a broken random source, or a token space close to full.
            raise CryptoError("could not draw an unused token (is the token space nearly full?)")
        rows = []
        for bidx, (kind, normalized) in self.wanted.items():
            token = token_format.new(kind, normalized)
            sealed = keyring.seal(normalized.encode(), _value_context(token, kind))
            if index.old is None:
                rows.append(NewContact(token, int(kind), bidx, sealed, index.key_id))
            else:
                alt = index.old.digest(kind, normalized)
                rows.append(NewContact(token, int(kind), bidx, sealed, index.key_id, alt, index.old_id))
        self._mine = {row.bidx: row.token for row in rows}
        return rows

    def absorb(self, got: Mapping[bytes, str]) -> None:
        """Take the store's answer: the tokens that hold each index now (ours or a racer's)."""
        for bidx, token in got.items():
            if bidx in self.wanted:
                self.out[bidx] = (token, token == self._mine[bidx])
                del self.wanted[bidx]


class TokenPlan(NamedTuple):
    """A batch looked up and, for its unknown values, new tokens drawn but not yet stored.

    Made by :meth:`Vault.plan_tokens` (in any process that opened the vault: bulk jobs plan in
    worker processes), stored with ``Store.insert_bulk(plan.new)`` in the process that writes,
    and turned into outcomes by :meth:`Vault.finish_plan`. Holds no clear value.
    """

    tokens: list[str | None]
    reasons: list[str | None]
    new: list[NewContact]
    new_of: dict[int, bytes]


# What a lookup leaves: tokens of the known values and reasons of the invalid ones (by position),
# and the still-unknown items, normalized and with their blind index (by position).
_Lookup = tuple[list[str | None], list[str | None], dict[int, tuple[Kind, str, bytes]]]


def _finish(
    tokens: list[str | None],
    reasons: list[str | None],
    pending: Mapping[int, tuple[Kind, str, bytes]],
    created: Mapping[bytes, tuple[str, bool]],
) -> list[Tokenized]:
    out = [
        Tokenized(token) if token is not None else Tokenized(None, reason or "internal")
        for token, reason in zip(tokens, reasons, strict=True)
    ]
    for index, (_, _, bidx) in pending.items():
        made = created.get(bidx)
        out[index] = Tokenized(None, "unknown-value") if made is None else Tokenized(made[0], created=made[1])
    return out


class Vault:
    """Tokens for contact data. Thread-safe; one per process is enough."""

    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        blind_index: BlindIndex,
        *,
        normalizer: Normalizer | None = None,
        token_format: TokenFormat | None = None,
        key_provider: KeyProvider | None = None,
        provider_factory: Callable[[], KeyProvider] | None = None,
        clock: Callable[[], float] = time.time,
        index_keys: Sequence[tuple[int, BlindIndex]] | None = None,
    ) -> None:
        self.store = store
        self._keyring = keyring
        self._keys_lock = threading.Lock()
        self._provider_factory = provider_factory
        self._index = _index_of(index_keys or [(1, blind_index)])
        self._normalizer = normalizer or Normalizer()
        self._format = token_format or TokenFormat()
        self._provider = key_provider
        self._clock = clock

    # -- tokenize --------------------------------------------------------------------------

    def tokenize_many(self, items: Sequence[tuple[Kind, str]], *, create: bool = True) -> list[Tokenized]:
        """One outcome per item, in order: existing token, new token, or a reason.

        With ``create=False`` unknown values get the reason ``unknown-value`` instead of a token.
        Two items with the same normalized value in one batch share one new token.
        """
        for _ in range(_INDEX_RETRIES):
            index = self._index
            tokens, reasons, pending = self._lookup(items, index)
            created: dict[bytes, tuple[str, bool]] = {}
            if pending and not create and self._index_moved(index):
                continue
            if pending and create:
                creation = _Creation(pending.values())
                while creation.wanted:
                    try:
                        rows = creation.rows(self._format, self._keyring, index)
                        creation.absorb(self.store.insert_new(rows))
                    except StaleKeys:
                        self.refresh_keys()
                        if self._index is not index:
                            break  # the blind-index keys changed: look everything up again
                if self._index is not index:
                    continue
                created = creation.out
            return _finish(tokens, reasons, pending, created)
        raise StaleKeys("the blind-index keys kept changing during one call")

    async def tokenize_many_async(
        self, items: Sequence[tuple[Kind, str]], *, create: bool = True
    ) -> list[Tokenized]:
        """:meth:`tokenize_many` for an event loop: new tokens of concurrent calls share commits.

        Lookups run inline (one batched query each); only the insert of new tokens waits.
        """
        for _ in range(_INDEX_RETRIES):
            index = self._index
            tokens, reasons, pending = self._lookup(items, index)
            created: dict[bytes, tuple[str, bool]] = {}
            if pending and not create and self._index_moved(index):
                continue
            if pending and create:
                creation = _Creation(pending.values())
                while creation.wanted:
                    rows = creation.rows(self._format, self._keyring, index)
                    try:
                        creation.absorb(await self.store.insert_new_async(rows))
                    except StaleKeys:
                        # Another process retired the key these rows were sealed with, or
                        # rotated the blind-index key (rare: only a vault that missed the
                        # rotation): load the keys and seal (or look up) again.
                        self.refresh_keys()
                        if self._index is not index:
                            break
                if self._index is not index:
                    continue
                created = creation.out
            return _finish(tokens, reasons, pending, created)
        raise StaleKeys("the blind-index keys kept changing during one call")

    def plan_tokens(self, items: Sequence[tuple[Kind, str]], *, create: bool = True) -> TokenPlan:
        """Look ``items`` up and draw new tokens for the unknown ones, without storing them.

        Same lookups and normalization as :meth:`tokenize_many`; items with the same normalized
        value share one new row. With ``create=False`` unknown values get ``unknown-value``.
        """
        keys = self._index
        tokens, reasons, pending = self._lookup(items, keys)
        if pending and not create and self._index_moved(keys):
            keys = self._index
            tokens, reasons, pending = self._lookup(items, keys)
        new: list[NewContact] = []
        if pending and create:
            new = _Creation(pending.values()).rows(self._format, self._keyring, keys)
        if not create:
            for index in pending:
                reasons[index] = "unknown-value"
            pending = {}
        return TokenPlan(tokens, reasons, new, {i: bidx for i, (_, _, bidx) in pending.items()})

    @staticmethod
    def finish_plan(plan: TokenPlan, found: Mapping[bytes, str]) -> list[Tokenized]:
        """Outcomes of a plan, given what the store answered for its new rows.

        An item whose new token collided with an existing one (the store left it out) gets the
        reason ``retry``: tokenize it again with :meth:`tokenize_many`.
        """
        mine = {row.bidx: row.token for row in plan.new}
        out = [
            Tokenized(token) if token is not None else Tokenized(None, reason)
            for token, reason in zip(plan.tokens, plan.reasons, strict=True)
        ]
        for index, bidx in plan.new_of.items():
            token = found.get(bidx)
            out[index] = (
                Tokenized(None, "retry") if token is None else Tokenized(token, created=token == mine[bidx])
            )
        return out

    def tokenize_bulk(self, items: Sequence[tuple[Kind, str]]) -> list[Tokenized]:
        """:meth:`tokenize_many` for bulk jobs: new rows go through ``Store.insert_bulk``."""
        plan = self.plan_tokens(items)
        try:
            found = self.store.insert_bulk(plan.new)
        except StaleKeys:
            # Insert-or-get: whatever was committed is found by the second plan's lookups.
            self.refresh_keys()
            plan = self.plan_tokens(items)
            found = self.store.insert_bulk(plan.new)
        results = self.finish_plan(plan, found)
        retry = [i for i, r in enumerate(results) if r.reason == "retry"]
        if retry:
            for index, again in zip(retry, self.tokenize_many([items[i] for i in retry]), strict=True):
                results[index] = again
        return results

    def _index_moved(self, index: _Index) -> bool:
        """Whether the stored blind-index keys differ from ``index`` (then they are reloaded).

        Asked before a lookup's misses are reported as unknown: a process that has not yet
        loaded a new blind-index key would miss the rows already moved to it.
        """
        stored = [k.id for k in self.store.load_keys() if k.purpose == "bidx"]
        mine = [index.key_id] if index.old_id is None else [index.old_id, index.key_id]
        if not stored or stored == mine:
            return False
        self.refresh_keys()
        return self._index is not index

    def _lookup(self, items: Sequence[tuple[Kind, str]], keys: _Index) -> _Lookup:
        """Look ``items`` up: the value as given first, then the misses normalized."""
        if keys.old is not None:
            return self._lookup_moving(items, keys.blind, keys.old)
        digest = keys.blind.digest
        # First pass: the value as given (see the module docstring for why this is sound).
        raw_bidx = keys.blind.digest_each(items, MAX_EMAIL_LENGTH)
        asked = {b for b in raw_bidx if b is not None}
        known = self.store.fetch_by_bidx(list(asked))
        get = known.get
        tokens = [get(b) if b is not None else None for b in raw_bidx]
        reasons: list[str | None] = [None] * len(items)

        # Misses: normalize, then look the normalized forms up in one more query.
        pending: dict[int, tuple[Kind, str, bytes]] = {}
        for index in [i for i, token in enumerate(tokens) if token is None]:
            kind, raw = items[index]
            try:
                normalized = self._normalizer.normalize(kind, raw)
            except InvalidValue as exc:
                reasons[index] = exc.reason
                continue
            pending[index] = (kind, normalized, digest(kind, normalized))
        if pending:
            # Values that were already normalized were looked up above; ask only for the others.
            unasked = list({b for _, _, b in pending.values()} - asked)
            if unasked:
                known.update(self.store.fetch_by_bidx(unasked))
            for index, (_, _, bidx) in list(pending.items()):
                hit = known.get(bidx)
                if hit is not None:
                    tokens[index] = hit
                    del pending[index]
        return tokens, reasons, pending

    def _lookup_moving(self, items: Sequence[tuple[Kind, str]], new: BlindIndex, old: BlindIndex) -> _Lookup:
        """:meth:`_lookup` while the blind-index key rotates: every value is asked for under both
        keys in the same query, so a row is found whether or not it has been moved yet."""
        raw_pairs: list[tuple[bytes, bytes] | None] = []
        for kind, raw in items:
            usable = 0 < len(raw) <= MAX_EMAIL_LENGTH
            raw_pairs.append((new.digest(kind, raw), old.digest(kind, raw)) if usable else None)
        asked = {b for pair in raw_pairs if pair is not None for b in pair}
        known = self.store.fetch_by_bidx(list(asked))
        tokens: list[str | None] = [None] * len(items)
        reasons: list[str | None] = [None] * len(items)
        pending: dict[int, tuple[Kind, str, bytes]] = {}
        normalized_pairs: dict[int, bytes] = {}
        for index, (kind, raw) in enumerate(items):
            pair = raw_pairs[index]
            hit = (known.get(pair[0]) or known.get(pair[1])) if pair is not None else None
            if hit is not None:
                tokens[index] = hit
                continue
            try:
                normalized = self._normalizer.normalize(kind, raw)
            except InvalidValue as exc:
                reasons[index] = exc.reason
                continue
            pending[index] = (kind, normalized, new.digest(kind, normalized))
            normalized_pairs[index] = old.digest(kind, normalized)
        if pending:
            unasked = list(({b for _, _, b in pending.values()} | set(normalized_pairs.values())) - asked)
            if unasked:
                known.update(self.store.fetch_by_bidx(unasked))
            for index, (_, _, bidx) in list(pending.items()):
                hit = known.get(bidx) or known.get(normalized_pairs[index])
                if hit is not None:
                    tokens[index] = hit
                    del pending[index]
        return tokens, reasons, pending

    # -- resolve ---------------------------------------------------------------------------

    def resolve_many(self, tokens: Sequence[str]) -> list[Resolved]:
        """One outcome per token, in order: value and attributes, or a reason.

        Reasons: ``unknown-token``, ``erased``, ``unreadable`` (a ciphertext failed to open: the
        row was tampered with or its key is gone; nothing is returned for it).
        """
        rows = self.store.fetch_for_resolve(list(set(tokens)))
        out, unknown_key = self._open_rows(tokens, rows)
        if unknown_key and self._refresh_quietly():
            # A row sealed under a data key another process added since this one loaded its keys.
            out, _ = self._open_rows(tokens, rows)
        return out

    def _open_rows(self, tokens: Sequence[str], rows: list[ContactRow]) -> tuple[list[Resolved], bool]:
        # The hot path: live rows without attributes (most of a Marketing Cloud batch) are opened
        # in one keyring loop; erased rows and rows with attributes take the general route.
        plain = [
            (t, k, ct) for t, k, ct, attrs in rows if ct is not None and attrs is None and k in _VALUE_PREFIX
        ]
        prefix = _VALUE_PREFIX  # _value_context, inline: one call less per value
        values = self._keyring.open_many([(ct, prefix[k] + t.encode()) for t, k, ct in plain])
        opened: dict[str, Resolved] = {}
        for (token, kind, _), value in zip(plain, values, strict=True):
            try:
                opened[token] = Resolved(value.decode(), _KINDS[kind]) if value is not None else _UNREADABLE
            except UnicodeDecodeError:
                opened[token] = _UNREADABLE
        if len(plain) < len(rows):
            for row in rows:
                if row[0] not in opened:
                    opened[row[0]] = self._open_row(row)
        unknown_key = False
        if _UNREADABLE in opened.values():
            known = self._keyring.key_ids
            unknown_key = any(
                ct is not None and len(ct) > 5 and int.from_bytes(ct[1:5], "big") not in known
                for row in rows
                if opened[row[0]] is _UNREADABLE
                for ct in row[2:]
            )
        return [opened.get(t) or _UNKNOWN_TOKEN for t in tokens], unknown_key

    def _open_row(self, row: ContactRow) -> Resolved:
        token, kind, value_ct, attrs_ct = row
        if value_ct is None:
            return Resolved(None, reason="erased")
        try:
            value = self._keyring.open(value_ct, _value_context(token, kind)).decode()
            attributes = self._open_attrs(row) if attrs_ct is not None else {}
        except (CryptoError, UnicodeDecodeError, msgspec.DecodeError):
            return _UNREADABLE
        return Resolved(value, _KINDS.get(kind), attributes)

    def _open_attrs(self, row: ContactRow) -> dict[str, str]:
        token, kind, _, attrs_ct = row
        if attrs_ct is None:
            return {}
        return _attrs_decoder.decode(self._keyring.open(attrs_ct, _attrs_context(token, kind)))

    # -- attributes ------------------------------------------------------------------------

    def _live_row(self, token: str) -> ContactRow:
        rows = self.store.fetch_by_tokens([token])
        if not rows or rows[0][2] is None:
            raise NotFound("no such token")
        return rows[0]

    def get_attributes(self, token: str) -> dict[str, str]:
        """The attributes of a live token."""
        row = self._live_row(token)
        return self._open_attrs(row)

    def set_attributes(
        self, token: str, attributes: Mapping[str, str], *, replace: bool = False
    ) -> dict[str, str]:
        """Set (merge, or with ``replace`` overwrite all) attributes; returns the new set."""
        for name, value in attributes.items():
            if not isinstance(name, str) or not name or len(name) > _MAX_ATTRIBUTE_NAME:
                raise InvalidValue("invalid-attribute-name")
            if not isinstance(value, str) or len(value) > _MAX_ATTRIBUTE_VALUE:
                raise InvalidValue("invalid-attribute-value")
        row = self._live_row(token)
        current = {} if replace else self._open_attrs(row)
        current.update(attributes)
        self._write_attrs(row, current)
        return current

    def delete_attributes(self, token: str, names: Sequence[str] | None = None) -> dict[str, str]:
        """Delete the named attributes (all when ``names`` is None); returns what is left."""
        row = self._live_row(token)
        current = {} if names is None else self._open_attrs(row)
        for name in names or ():
            current.pop(name, None)
        self._write_attrs(row, current)
        return current

    def merge_attributes_many(self, items: Sequence[tuple[str, Mapping[str, str]]]) -> int:
        """Merge attributes into many live tokens (later items win), one transaction; how many.

        For bulk jobs: one read of the current sets, one write. Unknown or erased tokens are
        skipped. Raises :class:`InvalidValue` for a name or value over the limits.
        """
        merged: dict[str, dict[str, str]] = {}
        for token, attributes in items:
            for name, value in attributes.items():
                if not name or len(name) > _MAX_ATTRIBUTE_NAME:
                    raise InvalidValue("invalid-attribute-name")
                if len(value) > _MAX_ATTRIBUTE_VALUE:
                    raise InvalidValue("invalid-attribute-value")
            merged.setdefault(token, {}).update(attributes)
        if not merged:
            return 0
        updates: list[tuple[str, dict[str, str]]] = []
        kinds: dict[str, int] = {}
        for row in self.store.fetch_by_tokens(list(merged)):
            kinds[row[0]] = row[1]
            if row[2] is None:
                continue
            try:
                current = self._open_attrs(row)
            except (CryptoError, UnicodeDecodeError, msgspec.DecodeError):
                continue  # an unreadable set is left alone rather than overwritten
            current.update(merged[row[0]])
            updates.append((row[0], current))
        for attempt in range(2):
            sealed: list[tuple[str, bytes | None]] = [
                (
                    token,
                    self._keyring.seal(_attrs_encoder.encode(current), _attrs_context(token, kinds[token])),
                )
                for token, current in updates
            ]
            try:
                return self.store.update_attrs_many(sealed)
            except StaleKeys:
                if attempt:
                    raise
                self.refresh_keys()
        return 0

    def _write_attrs(self, row: ContactRow, attributes: dict[str, str]) -> None:
        for attempt in range(2):
            sealed = (
                self._keyring.seal(_attrs_encoder.encode(attributes), _attrs_context(row[0], row[1]))
                if attributes
                else None
            )
            try:
                updated = self.store.update_attrs(row[0], sealed)
            except StaleKeys:
                if attempt:
                    raise
                self.refresh_keys()
                continue
            if not updated:
                raise NotFound("no such token")
            return

    # -- erasure ---------------------------------------------------------------------------

    def erase_token(self, token: str) -> bool:
        """Erase a token's value and attributes; the token stays retired. False if nothing to erase."""
        return self.store.erase(token)

    def erase_value(self, kind: Kind, raw: str) -> bool:
        """Erase the token of a value, if the vault knows it."""
        (outcome,) = self.tokenize_many([(kind, raw)], create=False)
        if outcome.reason is not None and outcome.reason != "unknown-value":
            raise InvalidValue(outcome.reason)
        return outcome.token is not None and self.store.erase(outcome.token)

    def erase_many(self, lines: Sequence[str]) -> list[tuple[str | None, str]]:
        """Erase many contacts, each given as its token or its value (an email address or a
        mobile number); one ``(token, outcome)`` per line, in order.

        Outcomes: ``erased``, ``already-erased``, ``unknown`` (no such token or value), or an
        invalid-value reason. A line that names an existing token is that token; any other line
        is a value.
        """
        rows = {row[0]: row for row in self.store.fetch_by_tokens(list(set(lines)))}
        values = [i for i, line in enumerate(lines) if line not in rows]
        found: dict[int, Tokenized] = {}
        if values:
            items = [(Kind.EMAIL if "@" in lines[i] else Kind.MOBILE, lines[i]) for i in values]
            found = dict(zip(values, self.tokenize_many(items, create=False), strict=True))
        out: list[tuple[str | None, str]] = []
        done: set[str] = set()
        for index, line in enumerate(lines):
            token = line if line in rows else found[index].token
            if token is None:
                reason = found[index].reason
                out.append((None, "unknown" if reason == "unknown-value" else reason or "unknown"))
            elif token in done or (token in rows and rows[token][2] is None):
                out.append((token, "already-erased"))
            else:
                out.append((token, "erased" if self.store.erase(token) else "already-erased"))
                done.add(token)
        self.store.purge_erased()
        return out

    # -- keys ------------------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        """The data keys this process holds, unwrapped (in memory only)."""
        return self._keyring

    @property
    def provider(self) -> KeyProvider | None:
        """The key provider the vault was opened with."""
        return self._provider

    def refresh_keys(self) -> bool:
        """Load data keys another process added; True if there were any.

        Keys already loaded stay in memory and keep serving: only new keys need the provider,
        so a key manager outage stops nothing but the loading of a newer key.
        """
        with self._keys_lock:
            known = set(self._keyring.key_ids)
            stored = self.store.load_keys()
            changed = self._refresh_index(stored)
            new = [k for k in stored if k.purpose == "data" and k.id not in known]
            if not new:
                return changed
            keyring = self._keyring
            for key in new:
                keyring = keyring.with_key(key.id, self._unwrap("data", key.id, key.wrapped))
            self._keyring = keyring
            return True

    def _refresh_index(self, stored: Sequence[StoredKey]) -> bool:
        """Take the stored blind-index keys (a rotation added one, a retirement dropped one)."""
        records = [k for k in stored if k.purpose == "bidx"]
        current = self._index
        mine = [current.key_id] if current.old_id is None else [current.old_id, current.key_id]
        if not records or [k.id for k in records] == mine:
            return False
        held = {current.key_id: current.blind}
        if current.old_id is not None and current.old is not None:
            held[current.old_id] = current.old
        self._index = _index_of(
            [(k.id, held.get(k.id) or BlindIndex(self._unwrap("bidx", k.id, k.wrapped))) for k in records]
        )
        return True

    @property
    def index_key_ids(self) -> list[int]:
        """The blind-index keys this process looks values up under, oldest first (two during a
        rotation); the last one is the key new rows carry."""
        index = self._index
        return [index.key_id] if index.old_id is None else [index.old_id, index.key_id]

    def reindex(
        self, rows: Sequence[tuple[str, int, bytes, bytes]]
    ) -> tuple[list[tuple[str, bytes, bytes]], int]:
        """Rows ``(token, kind, value_ct, bidx)`` with their value's index under the newest
        blind-index key: ``(token, old bidx, new bidx)`` per row, and how many did not open."""
        index = self._index.blind
        keyring = self._keyring
        out: list[tuple[str, bytes, bytes]] = []
        unreadable = 0
        for token, kind, value_ct, bidx in rows:
            if kind not in _VALUE_PREFIX:
                unreadable += 1
                continue
            try:
                value = keyring.open(value_ct, _value_context(token, kind)).decode()
            except (CryptoError, UnicodeDecodeError):
                unreadable += 1
                continue
            out.append((token, bidx, index.digest(_KINDS[kind], value)))
        return out, unreadable

    def rotate_index_key(self) -> int:
        """Add a new blind-index key: new rows carry it at once, lookups ask for both keys until
        the re-indexer has moved every row and the old key is retired. Returns its id."""
        if self._provider is None:
            raise CryptoError("this vault was opened without a key provider")
        provider = self._provider
        key = new_key()
        key_id = self.store.add_key("bidx", provider.name, lambda new_id: provider.wrap("bidx", new_id, key))
        with self._keys_lock:
            self._refresh_index(self.store.load_keys())
        return key_id

    def _refresh_quietly(self) -> bool:
        try:
            return self.refresh_keys()
        except KeyProviderUnavailable as exc:
            log.warning("a newer data key cannot be loaded yet: %s", exc)
            return False

    def _unwrap(self, purpose: str, key_id: int, wrapped: bytes) -> bytes:
        if self._provider is None:
            raise CryptoError("this vault was opened without a key provider")
        try:
            return self._provider.unwrap(purpose, key_id, wrapped)
        except KeyProviderUnavailable:
            raise
        except KeyProviderError:
            # The KEK may have been rotated since start (`keys rotate kek` on a key file): read
            # the provider again, once.
            if self._provider_factory is None:
                raise
            self._provider = self._provider_factory()
            return self._provider.unwrap(purpose, key_id, wrapped)

    def reseal(
        self, rows: Sequence[ContactRow]
    ) -> tuple[list[tuple[str, bytes, bytes | None, bytes, bytes | None]], int]:
        """Live rows' ciphertexts opened and sealed again under the current data key.

        Returns ``(token, old value, old attrs, new value, new attrs)`` per row, and how many rows
        did not open (left as they are, and reported).
        """
        keyring = self._keyring
        out: list[tuple[str, bytes, bytes | None, bytes, bytes | None]] = []
        unreadable = 0
        for token, kind, value_ct, attrs_ct in rows:
            if value_ct is None or kind not in _VALUE_PREFIX:
                continue
            try:
                vctx = _value_context(token, kind)
                new_value = keyring.seal(keyring.open(value_ct, vctx), vctx)
                new_attrs = None
                if attrs_ct is not None:
                    actx = _attrs_context(token, kind)
                    new_attrs = keyring.seal(keyring.open(attrs_ct, actx), actx)
            except CryptoError:
                unreadable += 1
                continue
            out.append((token, value_ct, attrs_ct, new_value, new_attrs))
        return out, unreadable

    def rotate_data_key(self) -> int:
        """Add a new data key; new ciphertexts use it, old ones still open. Returns its id."""
        if self._provider is None:
            raise CryptoError("this vault was opened without a key provider")
        provider = self._provider
        key = new_key()
        key_id = self.store.add_key("data", provider.name, lambda new_id: provider.wrap("data", new_id, key))
        with self._keys_lock:
            self._keyring = self._keyring.with_key(key_id, key)
        return key_id

    def shared_key(self, purpose: str) -> bytes:
        """A random key every process and replica shares (e.g. for signing access tokens).

        Created once, stored wrapped by the key-encryption key; the first writer wins.
        """
        if self._provider is None:
            raise CryptoError("this vault was opened without a key provider")
        candidate = base64.b64encode(self._provider.wrap(purpose, 0, new_key())).decode()
        stored = self.store.claim_meta(f"key:{purpose}", candidate)
        return self._unwrap(purpose, 0, base64.b64decode(stored))

    def close(self) -> None:
        """Close the store."""
        self.store.close()


def _index_of(keys: Sequence[tuple[int, BlindIndex]]) -> _Index:
    """The :class:`_Index` of one or two blind-index keys (by id: the newest is current)."""
    ordered = sorted(keys, key=lambda k: k[0])
    if len(ordered) == 1:
        return _Index(*ordered[0])
    if len(ordered) == 2:
        return _Index(ordered[1][0], ordered[1][1], ordered[0][0], ordered[0][1])
    raise KeyProviderError("the vault must have one blind-index key, or two while it rotates")
