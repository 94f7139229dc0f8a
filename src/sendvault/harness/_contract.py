"""The contract checks: Get Token, tokens, resolve, malformed requests, inbound SMS, credentials.

Each defect is charged to the one check it belongs to where the calls allow it: an id missing
from a resolve answer fails ``resolve.every-id-once``, not also every check that used the call;
a 500 for a batch holding unknown tokens fails ``resolve.unknown-is-unresolved``, not
``resolve.known``.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import msgspec

from ._http import HttpFailure, basic_header
from ._judge import email_shape, id_problems, mobile_reachable, mobile_shape, value_inside
from ._model import Exchange
from ._session import Call, NoTokenQueue, Session, with_retries
from ._vectors import contract, fill
from .checks import Results, Target, refused, unreachable

__all__ = ["Contract"]

_BATCH = 500
_CHUNK = 100  # Get Token calls that make the batch's tokens (inbound-SMS batches are small)


def _items(doc: Any, key: str) -> list[dict[str, Any]] | None:
    """The array ``key`` of an answer, its non-object items dropped; None when there is none."""
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        return None
    return [item for item in doc[key] if isinstance(item, dict)]


def _status(status: int | None) -> str:
    return "no answer" if status is None else f"HTTP {status}"


def _field(doc: Any, key: str) -> Any:
    """``doc[key]`` when ``doc`` is an object (a server may answer a list, a string or null)."""
    return doc.get(key) if isinstance(doc, dict) else None


def _rid(item: dict[str, Any]) -> str:
    return str(item.get("tokenRequestId"))


class _Resolve:
    """A resolve answer read back: resolved id -> (value, attributes), unresolved ids, problems."""

    def __init__(self, call: Call, sent: list[str]) -> None:
        self.call = call
        resolved = _items(call.doc, "resolvedTokens")
        unresolved = _items(call.doc, "unresolvedTokens")
        # Lenient, as the contract's sample servers are: one array may be left out when empty.
        self.shaped = call.status == 200 and (resolved is not None or unresolved is not None)
        self.lacks = [
            k for k, v in (("resolvedTokens", resolved), ("unresolvedTokens", unresolved)) if v is None
        ]
        resolved = resolved or []
        unresolved = unresolved or []
        self.values: dict[str, Any] = {}
        self.attributes: list[Any] = []
        self.unresolved: set[str] = set()
        self.id_problems: list[str] = []
        if not self.shaped:
            return
        assert resolved is not None
        assert unresolved is not None
        for item in resolved:
            self.values.setdefault(_rid(item), item.get("tokenValue"))
            self.attributes.append(item.get("attributes", _MISSING))
        self.unresolved = {_rid(item) for item in unresolved}
        self.id_problems = id_problems(sent, [*(_rid(i) for i in resolved), *(_rid(i) for i in unresolved)])


_MISSING = object()


def _took(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _attribute_problem(attributes: Any) -> str | None:
    if attributes is _MISSING:
        return "a resolved item has no attributes field"
    if not isinstance(attributes, list):
        return "attributes is not an array"
    for attribute in attributes:
        if not (
            isinstance(attribute, dict)
            and isinstance(attribute.get("name"), str)
            and isinstance(attribute.get("value"), str)
        ):
            return 'an attribute is not {"name": string, "value": string}'
    return None


class Contract:
    """The calls and judgements of the contract checks, in the order they run."""

    def __init__(
        self,
        session: Session,
        target: Target,
        results: Results,
        rng: random.Random,
        *,
        queue: NoTokenQueue,
        time_scale: float,
    ) -> None:
        self.s = session
        self.t = target
        self.r = results
        self.rng = rng
        self.queue = queue
        self.time_scale = time_scale
        self.retries = 0
        vectors = contract()
        self.valid: dict[str, tuple[str, str]] = {}
        self.names: dict[str, str] = {}
        for i, vector in enumerate(vectors["values"]):
            self.valid[f"g{i}"] = (vector["tokenType"], fill(vector["template"], rng))
            self.names[f"g{i}"] = vector["name"]
        self.invalid = {f"x{i}": v for i, v in enumerate(vectors["invalid_values"])}
        session.masker.add([v for _, v in self.valid.values()])
        session.masker.add([v["tokenValue"] for v in self.invalid.values()])
        self.tokens: dict[str, str] = {}
        # Every resolve answer's id problems, for resolve.every-id-once.
        self.id_findings: list[str] = []
        self.id_exchanges: list[Exchange] = []
        self.id_calls = 0
        self.id_notes: list[str] = []
        self.attr_problems: list[str] = []
        self.attr_seen = 0
        self.attr_exchanges: list[Exchange] = []

    # -- Get Token ---------------------------------------------------------------------------

    def _get_token_body(self, pairs: list[tuple[str, str, str]]) -> dict[str, Any]:
        return {"tokenValues": [{"tokenRequestId": i, "tokenValue": v, "tokenType": t} for i, t, v in pairs]}

    def _reachable(self, call: Call) -> None:
        if call.failure is not None and call.failure.kind in ("connection", "tls") and self.s.calls == 1:
            raise unreachable(call.failure)
        if call.status in (401, 403) and self.s.calls == 1:
            raise refused(call.status)

    async def get_tokens(self) -> None:
        """Get Token for the vectors' values (valid and invalid), then again as retries would."""
        pairs = [(i, t, v) for i, (t, v) in self.valid.items()]
        bad = [(i, v["tokenType"], v["tokenValue"]) for i, v in self.invalid.items()]
        call = await self.s.post(self.t.token_path, self._get_token_body(pairs + bad))
        self._reachable(call)
        items = _items(call.doc, "tokens") if call.status == 200 else None
        if items is None:
            what = f"Get Token answered {call.describe()}" + (
                " without a tokens array" if call.status == 200 else ""
            )
            self.r.put("gettoken.roundtrip", "fail", what, [call.exchange])
            for check_id in (
                "gettoken.stable",
                "gettoken.every-id-once",
                "gettoken.invalid-value-left-out",
                "token.email-shape",
                "token.mobile-shape",
                "token.mobile-unassigned",
                "token.no-value-inside",
            ):
                self.r.put(
                    check_id, "untested", f"no usable Get Token answer ({call.describe()})", [call.exchange]
                )
            return
        answered = [(_rid(item), item.get("token")) for item in items]
        for rid, token in answered:
            if rid in self.valid and rid not in self.tokens and isinstance(token, str) and token:
                self.tokens[rid] = token
        self._every_id_once(call, answered)
        await self._invalid_left_out(call, answered, bad[0])
        self._shapes(call)
        await self._stable(pairs)

    def _every_id_once(self, call: Call, answered: list[tuple[str, object]]) -> None:
        counts = Counter(rid for rid, _ in answered)
        problems = []
        repeated = [rid for rid, n in counts.items() if n > 1]
        never = [rid for rid in counts if rid not in self.valid and rid not in self.invalid]
        if repeated:
            problems.append(f"answered more than once: {', '.join(repeated)}")
        if never:
            problems.append(f"never sent: {', '.join(never[:5])}")
        if problems:
            self.r.put("gettoken.every-id-once", "fail", "; ".join(problems), [call.exchange])
        else:
            self.r.put(
                "gettoken.every-id-once", "pass", f"{len(counts)} ids answered, each once", [call.exchange]
            )

    async def _invalid_left_out(
        self, call: Call, answered: list[tuple[str, object]], one: tuple[str, str, str]
    ) -> None:
        leaked = sorted({self.invalid[rid]["name"] for rid, _ in answered if rid in self.invalid})
        alone = await self.s.post(self.t.token_path, self._get_token_body([one]))
        alone_items = _items(alone.doc, "tokens")
        exchanges = [call.exchange, alone.exchange]
        if leaked:
            self.r.put(
                "gettoken.invalid-value-left-out",
                "fail",
                f"tokens given for invalid input: {', '.join(leaked)}",
                exchanges,
            )
        elif alone.status != 200 or alone_items is None or alone_items:
            got = (
                alone.describe()
                if alone.status != 200
                else f"tokens = {msgspec.json.encode(_field(alone.doc, 'tokens')).decode()[:80]}"
            )
            self.r.put(
                "gettoken.invalid-value-left-out",
                "fail",
                f'one invalid value alone must get 200 with {{"tokens": []}}; got {got}',
                exchanges,
            )
        else:
            self.r.put(
                "gettoken.invalid-value-left-out",
                "pass",
                f"{len(self.invalid)} invalid items left out; one alone gets an empty tokens array",
                exchanges,
            )

    def _shapes(self, call: Call) -> None:
        email_bad, email_notes, mobile_bad, real, leaks = [], set(), [], [], []
        emails = mobiles = 0
        for rid, token in self.tokens.items():
            kind, value = self.valid[rid]
            if kind == "Email":
                emails += 1
                ok, note = email_shape(token)
                if not ok:
                    email_bad.append(f"{self.names[rid]}: {note}")
                elif note:
                    email_notes.add(note)
            else:
                mobiles += 1
                ok, note = mobile_shape(token)
                if not ok:
                    mobile_bad.append(f"{self.names[rid]}: {note}")
                if mobile_reachable(token):
                    real.append(self.names[rid])
            where = value_inside(kind, value, token)
            if where:
                leaks.append(f"{self.names[rid]}: {where}")
        ex = [call.exchange]
        self._verdict(
            "token.email-shape",
            emails,
            email_bad,
            f"{emails} email token(s) well-formed",
            exchanges=ex,
            notes=sorted(email_notes),
        )
        self._verdict(
            "token.mobile-shape",
            mobiles,
            mobile_bad,
            f"{mobiles} mobile token(s) of 8 to 15 digits",
            exchanges=ex,
        )
        self._verdict(
            "token.mobile-unassigned",
            mobiles,
            [f"{name}: the token is a valid phone number" for name in real],
            f"no mobile token is a valid number ({mobiles} checked)",
            exchanges=ex,
        )
        self._verdict(
            "token.no-value-inside",
            len(self.tokens),
            leaks,
            f"{len(self.tokens)} token(s) carry no part of their value",
            exchanges=ex,
        )

    def _verdict(
        self,
        check_id: str,
        checked: int,
        problems: list[str],
        ok: str,
        *,
        exchanges: list[Exchange],
        notes: list[str] | None = None,
    ) -> None:
        if problems:
            self.r.put(check_id, "fail", "; ".join(problems), exchanges, notes or [])
        elif checked == 0:
            self.r.put(check_id, "untested", "no token of this kind came back", exchanges)
        else:
            self.r.put(check_id, "pass", ok, exchanges, notes or [])

    async def _stable(self, pairs: list[tuple[str, str, str]]) -> None:
        if not self.tokens:
            self.r.put("gettoken.stable", "untested", "Get Token gave no token to compare")
            return
        again = await self.s.post(self.t.token_path, self._get_token_body(pairs))
        first_id = next(iter(self.tokens))
        reordered = [(f"s{i[1:]}", t, v) for i, t, v in reversed(pairs)]
        reordered.append(("s-dup", *self.valid[first_id]))
        other = await self.s.post(self.t.token_path, self._get_token_body(reordered))
        problems = []

        def same(rid: str) -> str:
            return rid

        def origin_of(rid: str) -> str:
            return "g" + rid[1:] if rid != "s-dup" else first_id

        for call, key, sent, label in (
            (again, same, pairs, "the retry"),
            (other, origin_of, reordered, "the reordered batch"),
        ):
            items = _items(call.doc, "tokens") if call.status == 200 else None
            if items is None:
                problems.append(f"{label} answered {call.describe()}")
                continue
            answered: dict[str, object] = {}
            for item in items:
                answered.setdefault(_rid(item), item.get("token"))
            for rid, _, _ in sent:
                origin = key(rid)
                if origin not in self.tokens:
                    continue  # no token the first time: gettoken.roundtrip's finding
                if rid not in answered:
                    problems.append(f"{self.names[origin]}: no token in {label} ({rid})")
                elif answered[rid] != self.tokens[origin]:
                    problems.append(f"{self.names[origin]}: another token in {label} ({rid})")
        exchanges = [again.exchange, other.exchange]
        if problems:
            self.r.put("gettoken.stable", "fail", "; ".join(problems), exchanges)
        else:
            self.r.put(
                "gettoken.stable",
                "pass",
                "same tokens on the retry, in another order, and for a value sent twice in one batch",
                exchanges,
            )

    # -- resolve -----------------------------------------------------------------------------

    def _resolve_body(self, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        return {"tokens": [{"tokenRequestId": rid, "token": token} for rid, token in pairs]}

    async def _resolve(self, pairs: list[tuple[str, str]]) -> _Resolve:
        call = await self.s.post(self.t.resolve_path, self._resolve_body(pairs))
        answer = _Resolve(call, [rid for rid, _ in pairs])
        if answer.shaped:
            self.id_calls += 1
            for missing in answer.lacks:
                note = f"an answer without {missing} (taken as empty)"
                if note not in self.id_notes:
                    self.id_notes.append(note)
            if answer.id_problems:
                self.id_findings += answer.id_problems
                self.id_exchanges.append(call.exchange)
            for attributes in answer.attributes:
                self.attr_seen += 1
                problem = _attribute_problem(attributes)
                if problem and problem not in self.attr_problems:
                    self.attr_problems.append(problem)
                    self.attr_exchanges.append(call.exchange)
        return answer

    def _known_problems(
        self, answer: _Resolve, expected: dict[str, str], label: str
    ) -> tuple[list[str], int]:
        """Wrong or unresolved values among the known tokens that came back; (problems, checked).

        An id that did not come back at all is resolve.every-id-once's finding, not this one's.
        """
        wrong = [
            rid for rid, value in expected.items() if rid in answer.values and answer.values[rid] != value
        ]
        lost = [rid for rid in expected if rid not in answer.values and rid in answer.unresolved]
        checked = sum(1 for rid in expected if rid in answer.values or rid in answer.unresolved)
        problems = []
        if wrong:
            problems.append(
                f"{label}: another value came back for {len(wrong)} token(s) ({', '.join(wrong[:5])})"
            )
        if lost:
            problems.append(f"{label}: {len(lost)} known token(s) unresolved ({', '.join(lost[:5])})")
        return problems, checked

    async def resolve(self) -> None:
        """Known tokens, known mixed with unknown, one unknown alone; roundtrip and attributes."""
        known = {f"r{rid[1:]}": (rid, token) for rid, token in self.tokens.items()}
        expected = {rr: self.valid[rid][1] for rr, (rid, _) in known.items()}
        roundtrip_ex: list[Exchange] = []
        known_problems: list[str] = []
        known_checked = 0
        known_ex: list[Exchange] = []
        if known:
            answer = await self._resolve([(rr, token) for rr, (_, token) in known.items()])
            roundtrip_ex.append(answer.call.exchange)
            known_ex.append(answer.call.exchange)
            if answer.shaped:
                known_problems, known_checked = self._known_problems(answer, expected, "known tokens")
            else:
                known_problems.append(f"resolving known tokens answered {answer.call.describe()}")
        self._roundtrip(known_problems, known_checked, roundtrip_ex)

        vectors = contract()["unknown_tokens"]
        unknown = [(f"u{i}", fill(v["template"], self.rng)) for i, v in enumerate(vectors)]
        picked = list(known.items())[:3]
        mixed = [(rr, token) for rr, (_, token) in picked] + unknown
        if picked:
            mixed.append(("r-again", picked[0][1][1]))
        answer = await self._resolve(mixed)
        alone = await self._resolve([("u-alone", unknown[0][1])])
        unknown_problems = []
        for label, got, ids in (
            ("mixed with known tokens", answer, [u for u, _ in unknown]),
            ("alone", alone, ["u-alone"]),
        ):
            if got.call.status != 200:
                unknown_problems.append(f"a batch with unknown tokens {label} answered {got.call.describe()}")
                continue
            if not got.shaped:
                unknown_problems.append(f"the answer ({label}) lacks resolvedTokens or unresolvedTokens")
                continue
            resolved = [rid for rid in ids if rid in got.values]
            if resolved:
                unknown_problems.append(
                    f"unknown token(s) resolved to a value ({label}): {', '.join(resolved)}"
                )
            elif not any(rid in got.unresolved for rid in ids):
                unknown_problems.append(f"no unknown token is in unresolvedTokens ({label})")
        self._verdict(
            "resolve.unknown-is-unresolved",
            1,
            unknown_problems,
            "unknown tokens are unresolved with 200, alone and mixed with known ones",
            exchanges=[answer.call.exchange, alone.call.exchange],
        )
        if picked and answer.shaped:
            mixed_expected = {rr: expected[rr] for rr, _ in picked}
            mixed_expected["r-again"] = expected[picked[0][0]]
            more, checked = self._known_problems(answer, mixed_expected, "mixed batch")
            known_problems += more
            known_checked += checked
            known_ex.append(answer.call.exchange)
        self._verdict(
            "resolve.known",
            known_checked,
            known_problems,
            f"{known_checked} known token(s) resolved to their values, also mixed with unknown ones "
            "and repeated",
            exchanges=known_ex,
        )

    def _roundtrip(self, problems: list[str], checked: int, exchanges: list[Exchange]) -> None:
        missing = [self.names[rid] for rid in self.valid if rid not in self.tokens]
        if self.r.has("gettoken.roundtrip"):
            return
        out = [f"no token for a valid value: {name}" for name in missing]
        out += problems
        tokens = list(self.tokens.values())
        if len(set(tokens)) != len(tokens):
            out.append("two different values got the same token")
        if out:
            self.r.put("gettoken.roundtrip", "fail", "; ".join(out), exchanges)
        elif checked == 0:
            self.r.put("gettoken.roundtrip", "untested", "no resolved token came back to compare", exchanges)
        else:
            note = (
                []
                if checked == len(self.tokens)
                else [f"{len(self.tokens) - checked} not answered (see resolve.every-id-once)"]
            )
            self.r.put(
                "gettoken.roundtrip", "pass", f"{checked} value(s) went to a token and back", exchanges, note
            )

    async def batch_500(self) -> None:
        """500 new values through Get Token, then one resolve call of all 500 tokens."""
        values = [f"b{i}.{self.rng.getrandbits(32):08x}@example.com" for i in range(_BATCH)]
        self.s.masker.add(values)
        made: dict[str, str] = {}
        for start in range(0, _BATCH, _CHUNK):
            chunk = [(f"v{i}", "Email", values[i]) for i in range(start, start + _CHUNK)]
            call = await self.s.post(self.t.token_path, self._get_token_body(chunk))
            for item in _items(call.doc, "tokens") or []:
                if isinstance(item.get("token"), str):
                    made.setdefault(_rid(item), item["token"])
            if call.status != 200:
                self.r.put(
                    "resolve.batch-500",
                    "untested",
                    f"making the 500 tokens: Get Token answered {call.describe()}",
                    [call.exchange],
                )
                return
        pairs = [(f"b{i}", made[f"v{i}"]) for i in range(_BATCH) if f"v{i}" in made]
        if len(pairs) < _BATCH:
            self.r.put("resolve.batch-500", "untested", f"Get Token gave only {len(pairs)} of 500 tokens")
            return
        answer = await self._resolve(pairs)
        call = answer.call
        seconds = call.ms / 1000
        if call.failure is not None:
            self.r.put(
                "resolve.batch-500",
                "fail",
                f"{call.failure.detail} (deadline {self.t.deadline:g} s)",
                [call.exchange],
            )
            return
        if not answer.shaped:
            self.r.put(
                "resolve.batch-500",
                "fail",
                f"500 tokens in one call answered {call.describe()}",
                [call.exchange],
            )
            return
        problems, checked = self._known_problems(
            answer, {f"b{i}": values[i] for i in range(_BATCH)}, "batch of 500"
        )
        if seconds > self.t.deadline:
            problems.insert(0, f"answered after {_took(seconds)}, past the {self.t.deadline:g} s deadline")
        self._verdict(
            "resolve.batch-500",
            checked,
            problems,
            f"{checked} tokens resolved right in {_took(seconds)} (deadline {self.t.deadline:g} s)",
            exchanges=[call.exchange],
        )

    def finish_resolve_checks(self) -> None:
        """resolve.every-id-once and resolve.attributes-shape, over every resolve answer."""
        notes = self.id_notes
        if self.id_findings:
            detail = "; ".join(dict.fromkeys(self.id_findings))
            self.r.put("resolve.every-id-once", "fail", detail, self.id_exchanges[:3], notes)
        elif self.id_calls == 0:
            self.r.put("resolve.every-id-once", "untested", "no resolve call was answered with the arrays")
        else:
            detail = f"every id exactly once in {self.id_calls} resolve answers"
            self.r.put("resolve.every-id-once", "pass", detail, notes=notes)
        self._verdict(
            "resolve.attributes-shape",
            self.attr_seen,
            self.attr_problems,
            f"{self.attr_seen} resolved item(s) with a well-formed attributes array",
            exchanges=self.attr_exchanges[:2],
        )

    # -- malformed requests, inbound SMS, redirect, credentials -----------------------------------

    async def malformed(self) -> None:
        """Every malformed body of the vectors, on both routes, must get 400."""
        problems, shown = [], []
        tried = 0
        for vector in contract()["malformed_bodies"]:
            body = vector["body"]
            for route, path in (("resolve", self.t.resolve_path), ("gettoken", self.t.token_path)):
                raw = body[route] if isinstance(body, dict) else body
                call = await self.s.post(path, raw)
                tried += 1
                if call.status != 400:
                    problems.append(f"{vector['name']} on {route}: {call.describe()}")
                    shown.append(call.exchange)
                elif not shown:
                    shown.append(call.exchange)
        self._verdict(
            "request.malformed-400",
            tried,
            problems,
            f"{tried} malformed requests got 400",
            exchanges=shown[:4],
        )

    async def inbound_sms(self) -> None:
        """A Get Token call for an inbound STOP, retried as Marketing Cloud does; queued after five."""
        mobile = next(
            ((rid, v) for rid, (t, v) in self.valid.items() if t == "MobileNumber" and rid in self.tokens),
            None,
        )
        if mobile is None:
            self.r.put(
                "gettoken.no-token-queue", "untested", "no mobile number got a token to send an SMS for"
            )
            return
        rid, value = mobile
        body = self._get_token_body([("sms-stop-1", "MobileNumber", value)])
        calls: list[Call] = []

        async def attempt() -> Call:
            call = await self.s.post(self.t.token_path, body)
            calls.append(call)
            return call

        call, tries = await with_retries(attempt, time_scale=self.time_scale)
        self.retries += tries - 1
        exchanges = [c.exchange for c in calls][-3:]
        if call.status != 200:
            self.queue.put(
                "sms-stop-1", value, "MobileNumber", keyword="STOP", tries=tries, last=call.describe()
            )
            self.r.put(
                "gettoken.no-token-queue",
                "fail",
                f"still failing after {tries} tries ({call.describe()}): "
                "the message went to the No Token Queue",
                exchanges,
            )
            return
        got = {_rid(i): i.get("token") for i in _items(call.doc, "tokens") or []}
        if got.get("sms-stop-1") != self.tokens[rid]:
            self.r.put(
                "gettoken.no-token-queue", "fail", "the inbound SMS did not get the number's token", exchanges
            )
            return
        retried = f" after {tries - 1} retr{'y' if tries == 2 else 'ies'}" if tries > 1 else ""
        self.r.put("gettoken.no-token-queue", "pass", f"the inbound STOP got its token{retried}", exchanges)

    def redirect_body(self) -> bytes:
        """A resolve body for the redirect check: one known token (tokens are no secret)."""
        token = next(iter(self.tokens.values()), "never.issued@tokens.harness.invalid")
        return msgspec.json.encode(self._resolve_body([("redirect-1", token)]))

    async def follow_redirect(self, path: str, body: bytes) -> tuple[int | None, Exchange, str | None]:
        """Re-send a redirected POST over HTTPS with credentials; (status, evidence, problem)."""
        call = await self.s.post(path, body)
        if call.status != 200:
            return call.status, call.exchange, call.describe()
        answer = _Resolve(call, ["redirect-1"])
        first = next(iter(self.tokens), None)
        if not answer.shaped:
            return call.status, call.exchange, "the answer is not a resolve answer"
        if first is not None and answer.values.get("redirect-1") != self.valid[first][1]:
            return (
                call.status,
                call.exchange,
                "the re-sent POST did not resolve its token (was the body kept?)",
            )
        return call.status, call.exchange, None

    async def bad_credentials(self) -> None:
        """No credentials and wrong ones get 401 (last: throttling servers count the failures)."""
        token = next(iter(self.tokens.values()), "never.issued@tokens.harness.invalid")
        body = self._resolve_body([("auth-1", token)])
        creds = self.s.authorizer.credentials
        if creds.mode == "none" and self.t.tls.client_cert:
            # Client certificates alone are not Marketing Cloud's authentication, but a server may
            # add them to it; without Basic or OAuth credentials there is nothing to get wrong.
            self.r.put(
                "auth.bad-credentials-401",
                "untested",
                "no --user or --token-url given: only the client certificate authenticated the harness",
            )
            return
        attempts: list[tuple[str, Call | None, int | None]] = [
            ("no credentials", await self.s.post(self.t.resolve_path, body, authorization=False), None)
        ]
        if creds.mode == "basic":
            wrong = basic_header(creds.user or "", (creds.password or "") + "-wrong")
            attempts.append(
                ("a wrong password", await self.s.post(self.t.resolve_path, body, authorization=wrong), None)
            )
        elif creds.mode == "oauth":
            try:
                answer = await self.s.authorizer.token_request(
                    secret=(creds.client_secret or "") + "-wrong", timeout=self.t.deadline
                )
                status: int | None = answer.status
            except HttpFailure:
                status = None
            attempts.append(("a wrong client secret at the token endpoint", None, status))
            forged = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJoYXJuZXNzIn0.Zm9yZ2Vk"
            attempts.append(
                (
                    "a forged bearer token",
                    await self.s.post(self.t.resolve_path, body, authorization=forged),
                    None,
                )
            )
        problems, throttled, exchanges = [], [], []
        for what, call, status in attempts:
            got = call.status if call is not None else status
            if call is not None:
                exchanges.append(call.exchange)
            if got == 429:
                throttled.append(what)
            elif got != 401:
                leak = " and returned data" if call is not None and call.status == 200 else ""
                problems.append(f"{what}: {call.describe() if call is not None else _status(got)}{leak}")
        if problems:
            self.r.put("auth.bad-credentials-401", "fail", "; ".join(problems), exchanges)
        elif throttled:
            self.r.put(
                "auth.bad-credentials-401",
                "untested",
                f"throttled (429) for {', '.join(throttled)} after earlier failures from this address; "
                "run again later",
                exchanges,
            )
        else:
            self.r.put(
                "auth.bad-credentials-401", "pass", f"{len(attempts)} bad attempt(s) got 401", exchanges
            )
