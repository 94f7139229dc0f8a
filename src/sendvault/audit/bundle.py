"""One bundle from the audit exports of many replicas, and its check.

Every replica keeps its own audit log (its own chain, its own signing key). A bundle holds the
exports of all of them, unchanged, one after the other, behind a first line that names each and
the SHA-256 of its export::

    {"type": "bundle", "version": 1, "sources": [{"name": "a", "sha256": "...", "lines": 12}, ...]}
    {"type": "source", "name": "a"}
    ... replica a's export, line for line ...
    {"type": "source", "name": "b"}
    ...

A bundle verifies when its sections are exactly the sources it names (same order, same SHA-256)
and each section verifies as an export on its own, under the key trusted for that replica. A
section cut, swapped or edited, a source added or dropped, breaks it.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .._fs import write_atomic
from .export import verify_export
from .store import Mark
from .verify import ChainBroken, Verified

__all__ = ["BundleBroken", "UnknownSource", "compose", "read_bundle", "verify_bundle", "write_bundle"]


class BundleBroken(Exception):
    """The bundle's shape does not hold (before any chain is checked), or a section is broken."""


class UnknownSource(BundleBroken):
    """A key or witness was given for a source the bundle does not hold (the caller's slip)."""


# A source's name, as `verify-bundle --public-key NAME=FILE` and `--witness NAME=URL` address it.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def write_bundle(sources: Sequence[tuple[str, Path]], output: Path) -> int:
    """Write the exports ``(name, path)`` as one bundle; returns the number of sources."""
    names = [name for name, _ in sources]
    odd = next((name for name in names if not _NAME.fullmatch(name)), None)
    if odd is not None:
        raise BundleBroken(
            f"the source name {odd!r} cannot be given to verify-bundle: use letters, digits, '.', '_'"
            " and '-' (up to 64)"
        )
    if len(set(names)) != len(names):
        raise BundleBroken("each source needs its own name")
    sections: list[tuple[str, str]] = []
    for name, path in sources:
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            text += "\n"
        sections.append((name, text))
    write_atomic(output, compose(sections).encode())
    return len(sections)


def compose(sections: Sequence[tuple[str, str]]) -> str:
    """The text of a bundle of ``(name, export text)`` sections, each text ending with a newline
    (as written, without checks: :func:`write_bundle` checks the names first)."""
    header = {
        "type": "bundle",
        "version": 1,
        "sources": [
            {"name": n, "sha256": hashlib.sha256(t.encode()).hexdigest(), "lines": t.count("\n")}
            for n, t in sections
        ],
    }
    parts = [json.dumps(header) + "\n"]
    for name, text in sections:
        parts.append(json.dumps({"type": "source", "name": name}) + "\n")
        parts.append(text)
    return "".join(parts)


def read_bundle(path: Path) -> list[tuple[str, str]]:
    """The sections ``(name, export text)`` of a bundle whose shape and checksums hold."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    try:
        header = json.loads(lines[0]) if lines else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("type") != "bundle" or header.get("version") != 1:
        raise BundleBroken("line 1 is not a bundle header")
    try:
        named = [(str(s["name"]), str(s["sha256"]), int(s["lines"])) for s in header["sources"]]
    except (KeyError, TypeError, ValueError):
        raise BundleBroken("the bundle header's sources are malformed") from None
    if not named:
        raise BundleBroken("the bundle holds no export: it proves nothing")
    names = [name for name, _, _ in named]
    if len(set(names)) != len(names):
        raise BundleBroken("two sources of the bundle have the same name (merge never writes that)")
    sections: list[tuple[str, str]] = []
    at = 1
    for name, digest, count in named:
        try:
            marker = json.loads(lines[at]) if at < len(lines) else None
        except ValueError:
            marker = None
        if marker != {"type": "source", "name": name}:
            raise BundleBroken(f"line {at + 1}: expected the section of source {name!r}")
        text = "".join(lines[at + 1 : at + 1 + count])
        if hashlib.sha256(text.encode()).hexdigest() != digest:
            raise BundleBroken(f"source {name!r}: its section does not match the bundle header")
        sections.append((name, text))
        at += 1 + count
    if at != len(lines):
        raise BundleBroken(f"line {at + 1}: lines after the last source")
    return sections


def verify_bundle(
    path: Path,
    keys: Mapping[str, Ed25519PublicKey],
    default: Ed25519PublicKey | None = None,
    known: Mapping[str, Sequence[Mark]] | None = None,
) -> list[tuple[str, Verified]]:
    """Verify every section under its source's trusted key (``keys``, else ``default``), and
    holding the heads ``known`` for its source (its witness's, say) with the same hashes.

    Raises :class:`BundleBroken` for the shape or a missing key, :class:`ChainBroken` (its
    reason naming the source) for the first section that does not verify.
    """
    known = known or {}
    sections = read_bundle(path)
    unknown = (set(keys) | set(known)) - {name for name, _ in sections}
    if unknown:
        held = ", ".join(repr(name) for name, _ in sections)
        raise UnknownSource(f"no source named {sorted(unknown)[0]!r} in the bundle (it holds {held})")
    results: list[tuple[str, Verified]] = []
    with tempfile.TemporaryDirectory(prefix="sendvault-bundle-") as tmp:
        for number, (name, text) in enumerate(sections):
            key = keys.get(name, default)
            if key is None:
                raise BundleBroken(
                    f"no trusted public key for source {name!r}: give --public-key {name}=FILE"
                )
            part = Path(tmp) / f"{number}.jsonl"
            part.write_text(text, encoding="utf-8")
            try:
                results.append((name, verify_export(part, key, known=known.get(name))))
            except ChainBroken as broken:
                raise ChainBroken(broken.seq, f"source {name!r}: {broken.reason}") from None
    return results
