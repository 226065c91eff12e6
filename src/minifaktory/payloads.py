"""Typed shapes of every JSON payload, with decoders and encoders built once.

Field order in ``Job`` and ``Failure`` is Faktory's serialisation order
(spec §2.5): MUTATE globs run against the stored text, so it must match.
Encoding is compact with dictionary keys sorted, as Go's encoder emits maps.
"""

from __future__ import annotations

import decimal
import re
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

DEFAULT_RETRY = 25


class Failure(msgspec.Struct, kw_only=True):
    """The ``failure`` object of a job that failed at least once (spec §2.2)."""

    failed_at: str = ""
    next_at: str | UnsetType = UNSET
    message: str | UnsetType = UNSET
    errtype: str | UnsetType = UNSET
    backtrace: list[str] | UnsetType = UNSET
    retry_count: int = 0
    remaining: int = 0

    def normalise(self) -> None:
        """Drop empty optional fields, as Go's ``omitempty`` does."""
        if not self.next_at:
            self.next_at = UNSET
        if not self.message:
            self.message = UNSET
        if not self.errtype:
            self.errtype = UNSET
        if not self.backtrace:
            self.backtrace = UNSET


class Job(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A Faktory job. Unknown top-level fields are dropped, as Faktory does."""

    retry: int | None = None
    failure: Failure | None = None
    custom: dict[str, Any] | None = None
    jid: str = ""
    queue: str = ""
    jobtype: str = ""
    created_at: str = ""
    enqueued_at: str = ""
    at: str = ""
    args: list[Any] | None = None
    reserve_for: int = 0
    backtrace: int = 0
    #: Not a Faktory field (it drops it): minifaktory's in-queue priority, 1-9, 0 = absent.
    priority: int = 0


class Hello(msgspec.Struct, kw_only=True):
    """The HELLO payload; only ``wid`` changes behaviour (spec §1.2)."""

    v: int = 0
    pwdhash: str = ""
    wid: str = ""
    hostname: str = ""
    pid: int = 0
    labels: list[str] | None = None
    username: str = ""


class Fail(msgspec.Struct, kw_only=True):
    """The FAIL payload."""

    jid: str = ""
    errtype: str = ""
    message: str = ""
    backtrace: list[str] | None = None


class Beat(msgspec.Struct, kw_only=True):
    """The BEAT payload."""

    wid: str = ""
    current_state: str = ""
    rss_kb: int = 0


class TrackSet(msgspec.Struct, kw_only=True):
    """The TRACK SET payload (spec §5.5)."""

    jid: str = ""
    percent: int | None = None
    desc: str | None = None
    reserve_until: str = ""


class Filter(msgspec.Struct, kw_only=True):
    """Which entries of a set a MUTATE touches (spec §4.1)."""

    jobtype: str = ""
    jids: list[str] | None = None
    regexp: str = ""


class Mutate(msgspec.Struct, kw_only=True):
    """The MUTATE payload."""

    cmd: str = ""
    target: str = ""
    filter: Filter | None = None


job_decoder = msgspec.json.Decoder(Job)
jobs_decoder = msgspec.json.Decoder(list[Job])
hello_decoder = msgspec.json.Decoder(Hello)
ack_decoder = msgspec.json.Decoder(dict[str, str])
fail_decoder = msgspec.json.Decoder(Fail)
beat_decoder = msgspec.json.Decoder(Beat)
mutate_decoder = msgspec.json.Decoder(Mutate)
track_set_decoder = msgspec.json.Decoder(TrackSet)

_encoder = msgspec.json.Encoder(order="deterministic")
_ordered_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    """Compact JSON with sorted dictionary keys (Go's map order)."""
    return _encoder.encode(value)


def encode_in_order(value: Any) -> bytes:
    """Compact JSON keeping dictionary insertion order (for documents shaped like Go structs)."""
    return _ordered_encoder.encode(value)


def go_float(value: float) -> int | msgspec.Raw:
    """A float written the way Go's ``encoding/json`` writes it (``0`` not ``0.0``,
    no exponent between 1e-6 and 1e21)."""
    if value == int(value) and abs(value) < 1e21:
        return int(value)
    if 1e-6 <= abs(value) < 1e21:
        return msgspec.Raw(format(decimal.Decimal(repr(value)), "f").encode())
    mantissa, _, exponent = repr(value).partition("e")
    sign = exponent[0] if exponent[0] in "+-" else "+"
    return msgspec.Raw(f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}".encode())


T = TypeVar("T")


def decode_lenient(decoder: msgspec.json.Decoder[T], data: bytes) -> T:
    """Decode a command's payload as Go's encoding/json would: a ``null`` field leaves it
    at its zero value, and invalid UTF-8 in a string becomes U+FFFD. Anything else
    wrong, nesting too deep included, is a ``msgspec.DecodeError``."""
    try:
        try:
            return _decode_nulls_as_absent(decoder, data)
        except UnicodeDecodeError:
            fixed = data.decode("utf-8", "replace").encode()
            return _decode_nulls_as_absent(decoder, fixed)
        except msgspec.DecodeError:
            # Go turns a \\uXXXX escape of half a surrogate pair into U+FFFD too.
            paired = _replace_lone_surrogates(data)
            if paired == data:
                raise
            return decode_lenient(decoder, paired)
    except RecursionError:
        raise msgspec.DecodeError("JSON nested too deeply") from None


#: A \\u escape of a high surrogate with no low one after it, or of a low surrogate with
#: no high one before it (an even run of backslashes before it is text, not an escape).
_LONE_SURROGATE = re.compile(
    rb"(?<!\\)((?:\\\\)*)"
    rb"(?:\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<![\\]u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)


def _replace_lone_surrogates(data: bytes) -> bytes:
    if b"\\u" not in data:
        return data
    return _LONE_SURROGATE.sub(rb"\1\\ufffd", data)


def _decode_nulls_as_absent(decoder: msgspec.json.Decoder[T], data: bytes) -> T:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        if "got `null`" not in str(exc):
            raise
        raw = msgspec.json.decode(data)
        fixed = [_null_free(item) for item in raw] if isinstance(raw, list) else _null_free(raw)
        return decoder.decode(encode(fixed))


def decode_job(data: bytes) -> Job:
    """Decode a pushed job (``null`` fields count as absent)."""
    return decode_lenient(job_decoder, data)


def decode_jobs(data: bytes) -> list[Job]:
    """Decode a PUSHB array of jobs (``null`` fields count as absent)."""
    return decode_lenient(jobs_decoder, data)


def _null_free(raw: Any) -> Any:
    # Go leaves a field at its zero value when the JSON says null; dropping the
    # key does the same here. ``retry`` and ``args`` keep their null: it has a meaning.
    if not isinstance(raw, dict):
        return raw
    out = {k: v for k, v in raw.items() if v is not None or k in ("retry", "args")}
    for nested in ("failure", "filter"):
        if isinstance(out.get(nested), dict):
            out[nested] = {k: v for k, v in out[nested].items() if v is not None}
    return out


_GO_VALUE = {"int": "number", "float": "number", "str": "string", "array": "array",
             "object": "object", "bool": "bool"}  # fmt: skip
_GO_TYPE = {"str": "string", "int": "int", "array": "[]interface {}",
            "object": "map[string]interface {}"}  # fmt: skip
_TYPE_ERROR = re.compile(
    r"Expected `([^`]+)`, got `([^`]+)`(?: - at `\$((?:\[\d+\])?)\.?([\w.]*)`)?"
)
_SYNTAX_AT_START = re.compile(r"JSON is malformed: invalid character \(byte 0\)")


def decode_error_text(exc: msgspec.DecodeError, data: bytes = b"", struct: str = "Job") -> str:
    """A decoder message phrased the way Go's ``encoding/json`` phrases it, where known."""
    text = str(exc)
    if text.startswith("Input data was truncated") or text == "Input data was empty":
        return "unexpected end of JSON input"
    if _SYNTAX_AT_START.fullmatch(text) and data:
        char = data[:1].decode("latin-1")
        return f"invalid character {char!r} looking for beginning of value"
    m = _TYPE_ERROR.fullmatch(text)
    if m is None:
        return text
    expected = m[1].split(" | ")[0]
    got = _GO_VALUE.get(m[2], m[2])
    if not m[4]:
        kind = "[]client.Job" if expected == "array" else f"client.{struct}"
        return f"json: cannot unmarshal {got} into Go value of type {kind}"
    gotype = _GO_TYPE.get(expected, expected)
    return f"json: cannot unmarshal {got} into Go struct field {struct}.{m[4]} of type {gotype}"
