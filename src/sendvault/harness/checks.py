"""`sendvault harness check`: conformance of a token server to Marketing Cloud's contract.

Every check has a stable id (:data:`CHECKS`, listed in docs/harness.md), a status (``pass``,
``fail`` or ``untested`` when it could not be made) and evidence: the calls behind the verdict,
clear values masked. The calls are driven by the golden vectors in ``vectors/contract.json``,
which sendvault's own tests use too.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ._http import Authorizer, Credentials, Endpoint, HttpFailure, TlsOptions
from ._mask import Masker, clean
from ._model import Check, CheckReport, CheckSummary, Evidence, Exchange, QueueSummary, Status
from ._session import NoTokenQueue, Session, Stalled

if TYPE_CHECKING:
    from ._contract import Contract

__all__ = ["CHECKS", "CheckOptions", "Target", "Unreachable", "refused", "run_checks", "unreachable"]

# id -> (title, what passing means). Ids are stable: tools and people filter on them.
CHECKS: dict[str, tuple[str, str]] = {
    "gettoken.roundtrip": (
        "Get Token gives every valid value a token that resolves back to it",
        "Each valid value of the vectors gets a token, and resolving the token gives the value back.",
    ),
    "gettoken.stable": (
        "Same value, same token (also on a retry)",
        (
            "The identical request sent again (as a retry would), the values in another order under new "
            "ids, and one value twice in a batch all get the tokens of the first call."
        ),
    ),
    "gettoken.every-id-once": (
        "Get Token answers each request id at most once, and only ids it was sent",
        "No tokenRequestId appears twice in `tokens`, and none that the request did not carry.",
    ),
    "gettoken.invalid-value-left-out": (
        "A value that gets no token is left out",
        (
            "Invalid values and unknown types are absent from `tokens` with status 200; a request "
            'with one such value gets `{"tokens": []}`.'
        ),
    ),
    "gettoken.no-token-queue": (
        "An inbound SMS (STOP) gets its token within five tries",
        (
            "A Get Token call for an inbound SMS, retried after 5/30/60/120 s as Marketing Cloud does, "
            "gets the number's token; after five failures it would go to the No Token Queue."
        ),
    ),
    "token.email-shape": (
        "Email tokens are well-formed addresses",
        (
            "Every email token is a syntactically valid address. Tokens on a reserved domain "
            "(.invalid, .test, .example) pass, with a note."
        ),
    ),
    "token.mobile-shape": (
        "Mobile tokens are E.164-shaped (at most 15 digits)",
        (
            "Every mobile token is 8 to 15 digits without + or a leading 0: Marketing Cloud's SMS side "
            "takes E.164 numbers only."
        ),
    ),
    "token.mobile-unassigned": (
        "Mobile tokens are not real phone numbers",
        (
            "phonenumbers does not judge any mobile token a valid (assigned) number, so no token can "
            "reach a real phone."
        ),
    ),
    "token.no-value-inside": (
        "No part of the value in its token",
        (
            "No token contains its value, the local part (also reversed, hex or base64), a run of six "
            "characters of it, or the number's digits, national number or last seven digits."
        ),
    ),
    "resolve.known": (
        "Known tokens resolve to their values",
        (
            "Tokens made by Get Token, also mixed with unknown tokens and repeated under another id, "
            "are in `resolvedTokens` with the right `tokenValue`."
        ),
    ),
    "resolve.unknown-is-unresolved": (
        "An unknown token is unresolved, with 200",
        (
            "Tokens never issued are in `unresolvedTokens` and the call answers 200, never a 4xx or 5xx, "
            "alone or mixed with known tokens."
        ),
    ),
    "resolve.every-id-once": (
        "Every request id lands in exactly one of the two arrays",
        (
            "In every resolve answer, each tokenRequestId sent is in `resolvedTokens` or "
            "`unresolvedTokens`, exactly once, and no other id is."
        ),
    ),
    "resolve.batch-500": (
        "A batch of 500 tokens is resolved within the deadline",
        (
            "One call with 500 tokens is answered 200 within the deadline (60 s unless --deadline), with "
            "the right value for each."
        ),
    ),
    "resolve.attributes-shape": (
        "Resolved items carry an attributes array",
        'Each resolved item has `attributes`: an array of `{"name", "value"}` strings (often empty).',
    ),
    "request.malformed-400": (
        "Malformed requests get 400",
        (
            "Bodies that are not JSON, not an object, lack the array, carry a string for it, or are "
            "empty get 400 on both routes: never 200 and never a 5xx."
        ),
    ),
    "auth.bad-credentials-401": (
        "Missing or wrong credentials get 401",
        (
            "No Authorization header and a wrong secret (for OAuth: a wrong client secret at the token "
            "endpoint and a forged bearer token) get 401, and no data."
        ),
    ),
    "transport.redirect-308": (
        "Plain HTTP is answered 308 to the same path on HTTPS",
        (
            "A POST to the --http-url gets 308 with a Location on https:// and the same path (no "
            "credentials are sent in clear), and the POST re-sent there is answered correctly."
        ),
    ),
    "transport.tls-legacy-refused": (
        "TLS 1.0 and TLS 1.1 are refused",
        (
            "Handshakes pinned to TLS 1.0 and to TLS 1.1 fail. Untested when this machine's OpenSSL "
            "cannot offer them (proven on loopback first)."
        ),
    ),
    "transport.rsa-kex-refused": (
        "No RSA key exchange",
        "No TLS <= 1.2 suite with RSA key exchange (no forward secrecy) is accepted.",
    ),
    "transport.hsts": (
        "HSTS for at least a year",
        "HTTPS answers carry Strict-Transport-Security with a max-age of at least 31536000 s.",
    ),
}


_URL_HINT = "--url takes the https:// URL of the server; give its plain-HTTP URL as --http-url"


class Unreachable(Exception):
    """The server cannot be reached or refuses the harness's credentials: nothing can be checked."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


_CREDENTIALS_HINT = (
    "check --user and --password (or $SENDVAULT_HARNESS_PASSWORD), or the OAuth client; "
    "the client needs the resolve and tokenize scopes"
)


def unreachable(failure: HttpFailure) -> Unreachable:
    """The error for a call that could not reach the server, with what to try."""
    if failure.kind == "tls" and "not trusted" in failure.detail:
        return Unreachable(failure.detail, "give --ca with the CA that signed the server's certificate")
    if failure.kind == "tls":
        return Unreachable(failure.detail, "is --url the server's HTTPS port? it must speak TLS 1.2 or newer")
    if failure.kind == "auth" and failure.detail.startswith("OAuth") and "answered 4" not in failure.detail:
        # Not a refusal (4xx): a 200 without a usable token, or the endpoint failing (5xx).
        return Unreachable(
            failure.detail,
            "is --token-url the OAuth token endpoint, and is it running? It must answer 200 with a JSON"
            " access_token and a positive expires_in (RFC 6749 §5.1)",
        )
    if failure.kind == "auth":
        return Unreachable(failure.detail, _CREDENTIALS_HINT)
    if failure.kind == "usage":
        return Unreachable(failure.detail, "--token-url takes the https:// URL of the OAuth token endpoint")
    if failure.detail.startswith("OAuth"):
        return Unreachable(failure.detail, "is --token-url right, and is the token endpoint running?")
    return Unreachable(failure.detail, "is the server running, and is --url right?")


def refused(status: int | None) -> Unreachable:
    """The error for credentials the server refused."""
    return Unreachable(f"the server refused the harness's credentials ({status})", _CREDENTIALS_HINT)


@dataclass(frozen=True, slots=True)
class Target:
    """The server under test and how to reach it."""

    url: str
    credentials: Credentials
    tls: TlsOptions = field(default_factory=TlsOptions)
    http_url: str | None = None
    resolve_path: str = "/v1/mc/resolve"
    token_path: str = "/v1/mc/tokens"
    deadline: float = 60.0


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """How `harness check` runs."""

    time_scale: float = 1.0
    queue_file: Path | None = None
    skip: frozenset[str] = frozenset()
    seed: int | None = None


# Evidence stays readable whatever the server sent: a detail line, notes and calls per check.
MAX_DETAIL = 1000
MAX_NOTE = 400
MAX_NOTES = 20
MAX_EXCHANGES = 6


class Results:
    """Check outcomes as they are found; each id gets one."""

    def __init__(self, skip: Iterable[str] = ()) -> None:
        self._skip = frozenset(skip)
        self._found: dict[str, Check] = {}
        self.stopped: str | None = None

    def put(
        self,
        check_id: str,
        status: Status,
        detail: str,
        exchanges: Iterable[Exchange] = (),
        notes: Iterable[str] = (),
    ) -> None:
        """Record a check's status and evidence."""
        assert check_id in CHECKS, check_id
        if check_id in self._skip:
            return
        title = CHECKS[check_id][0]
        # A detail may quote the server (an id it made up): cut, control characters made visible.
        shown = [clean(n, MAX_NOTE) for n in list(notes)[:MAX_NOTES]]
        evidence = Evidence(clean(detail, MAX_DETAIL), list(exchanges)[:MAX_EXCHANGES], shown)
        self._found[check_id] = Check(check_id, title, status, evidence)

    def put_evidence(self, check_id: str, status: Status, evidence: Evidence) -> None:
        """Record a check with evidence built elsewhere."""
        self.put(check_id, status, evidence.detail, evidence.exchanges, evidence.notes)

    def has(self, check_id: str) -> bool:
        """Whether the check is already recorded."""
        return check_id in self._found

    def ordered(self) -> list[Check]:
        """Every check in the documented order; skipped ones untested, with a note."""
        out = []
        for check_id, (title, _) in CHECKS.items():
            found = self._found.get(check_id)
            if found is None:
                why = (
                    "skipped (--skip)"
                    if check_id in self._skip
                    else f"not reached: {self.stopped}"
                    if self.stopped
                    else "not reached"
                )
                found = Check(check_id, title, "untested", Evidence(why))
            out.append(found)
        return out


def verdict(checks: list[Check], skip: frozenset[str]) -> bool:
    """Pass only when every check passed, except those skipped on purpose."""
    return all(c.status == "pass" or c.id in skip for c in checks)


async def run_checks(
    target: Target,
    options: CheckOptions,
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> CheckReport:
    """Run every check against ``target``; :class:`Unreachable` when nothing can be checked."""
    from ._contract import Contract  # noqa: PLC0415 - the contract steps import the checks' registry

    started_wall = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    try:
        endpoint = Endpoint.parse(target.url, want="https")
        http = Endpoint.parse(target.http_url, want="http") if target.http_url else None
        ssl_context = target.tls.context()
    except ValueError as exc:
        raise Unreachable(str(exc), _URL_HINT) from None
    results = Results(options.skip)
    rng = random.Random(options.seed)  # noqa: S311 - test data, not secrets
    masker = Masker()
    session = Session(
        endpoint,
        Authorizer(target.credentials, target.tls),
        ssl_context,
        deadline=target.deadline,
        masker=masker,
    )
    queue = NoTokenQueue(options.queue_file)
    contract = Contract(session, target, results, rng, queue=queue, time_scale=options.time_scale)
    try:
        try:
            await session.authorizer.header(timeout=target.deadline)
        except HttpFailure as exc:
            raise unreachable(exc) from None
        try:
            await _steps(
                session,
                contract,
                target=target,
                options=options,
                endpoint=endpoint,
                http=http,
                results=results,
                progress=progress,
            )
        except Stalled as exc:
            results.stopped = str(exc)
    finally:
        await session.aclose()
    checks = results.ordered()
    passed = verdict(checks, options.skip)
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("pass", "fail", "untested")}
    summary = CheckSummary(
        target=endpoint.url(),
        started=started_wall.isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - started, 2),
        passed=counts["pass"],
        failed=counts["fail"],
        untested=counts["untested"],
        verdict="pass" if passed else "fail",
        retries=contract.retries,
        no_token_queue=QueueSummary(len(queue.entries), queue.write()),
        stopped=results.stopped,
    )
    return CheckReport(checks, summary)


async def _steps(
    session: Session,
    contract: Contract,
    *,
    target: Target,
    options: CheckOptions,
    endpoint: Endpoint,
    http: Endpoint | None,
    results: Results,
    progress: Callable[[str], None],
) -> None:
    """The checks' calls, in order; :class:`Stalled` ends them early."""
    progress("Get Token")
    await contract.get_tokens()
    progress("resolve")
    await contract.resolve()
    progress("a batch of 500")
    await contract.batch_500()
    contract.finish_resolve_checks()
    progress("malformed requests")
    await contract.malformed()
    progress("inbound SMS and retries")
    await contract.inbound_sms()
    progress("transport")
    await _transport(
        session,
        contract,
        target=target,
        options=options,
        endpoint=endpoint,
        http=http,
        results=results,
        progress=progress,
    )
    progress("credentials")
    # Last: wrong credentials count against this address on servers that throttle them.
    await contract.bad_credentials()


async def _transport(
    session: Session,
    contract: Contract,
    *,
    target: Target,
    options: CheckOptions,
    endpoint: Endpoint,
    http: Endpoint | None,
    results: Results,
    progress: Callable[[str], None],
) -> None:
    """HSTS, the plain-HTTP redirect, TLS versions and key exchange."""
    from ._transport import hsts, redirect_308, tls_checks  # noqa: PLC0415

    status, evidence = hsts(session.last_headers or None, endpoint.url(target.resolve_path))
    results.put_evidence("transport.hsts", status, evidence)
    if http is None:
        results.put("transport.redirect-308", "untested", "give --http-url to check the plain-HTTP redirect")
    else:
        status, evidence = await redirect_308(
            http,
            endpoint,
            target.resolve_path,
            contract.redirect_body(),
            follow=contract.follow_redirect,
            timeout=target.deadline,
        )
        results.put_evidence("transport.redirect-308", status, evidence)
    if not (options.skip >= {"transport.tls-legacy-refused", "transport.rsa-kex-refused"}):
        progress("TLS versions and key exchange")
        found = await tls_checks(endpoint, target.tls.ca_file, client_cert=bool(target.tls.client_cert))
        for check_id, (status, evidence) in found.items():
            results.put_evidence(check_id, status, evidence)
