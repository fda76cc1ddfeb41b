"""Keyed pseudonyms: UIDs, identifiers, date shifts and output names.

Every replacement is an HMAC-SHA256 of the original under the run's secret, with a purpose label so
that the same value maps differently in different roles. Same key and same input give the same output
on any worker and in any run; without the key the mapping cannot be reversed or recomputed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from deid.errors import ConfigError

KEY_BYTES_MIN = 16
# A shift within ten years back keeps plausible dates; 0 is excluded so every date really moves.
DATE_SHIFT_MAX_DAYS = 3650
_PSEUDONYM_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True)
class DeidKey:
    """The run's secret. `generated` is True when no key file was given."""

    secret: bytes = field(repr=False)
    generated: bool = False

    def __post_init__(self) -> None:
        if len(self.secret) < KEY_BYTES_MIN:
            raise ConfigError(
                f"the de-identification key is {len(self.secret)} bytes; use at least {KEY_BYTES_MIN} "
                "random bytes (for example: head -c 32 /dev/urandom > deid.key)"
            )

    @classmethod
    def generate(cls) -> DeidKey:
        return cls(secrets.token_bytes(32), generated=True)

    @classmethod
    def from_bytes(cls, raw: bytes) -> DeidKey:
        """Key file contents, used as they are (surrounding white space ignored): bytes or text."""
        return cls(raw.strip())

    @classmethod
    def from_file(cls, path: str | Path) -> DeidKey:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read --deid_key_file: {exc.strerror}") from None
        return cls.from_bytes(raw)

    def to_token(self) -> str:
        """A printable form for passing the key to workers inside pipeline options."""
        return base64.urlsafe_b64encode(self.secret).decode("ascii")

    @classmethod
    def from_token(cls, token: str) -> DeidKey:
        return cls(base64.urlsafe_b64decode(token.encode("ascii")))

    def digest(self, purpose: str, value: str | bytes) -> bytes:
        data = value.encode("utf-8") if isinstance(value, str) else value
        return hmac.new(self.secret, purpose.encode("ascii") + b"\x00" + data, hashlib.sha256).digest()

    def uid(self, old_uid: str) -> str:
        """A `2.25.<integer>` UID (ISO/IEC 9834-8) derived from the old UID; at most 64 characters."""
        value = int.from_bytes(self.digest("uid", old_uid.strip().rstrip("\x00"))[:16], "big")
        # 2.25 UIDs are UUID-sized integers; clear the top bit so the text fits 64 characters.
        return f"2.25.{value >> 1}"

    def pseudonym(self, purpose: str, value: str, length: int = 16) -> str:
        """An identifier of `length` characters from an unambiguous alphabet (fits SH/LO/CS)."""
        digest = self.digest(purpose, value.strip())
        number = int.from_bytes(digest, "big")
        out = []
        for _ in range(length):
            number, index = divmod(number, len(_PSEUDONYM_ALPHABET))
            out.append(_PSEUDONYM_ALPHABET[index])
        return "".join(out)

    def path_id(self, relative_path: str) -> str:
        """64 hex characters naming an input whose bytes could not be read (the `input_sha256` of its
        record): a keyed hash of its path relative to --input, so the record never shows the path."""
        return self.digest("input-path", relative_path).hex()

    def fraction(self, purpose: str, value: str) -> float:
        """A keyed number in [0, 1), uniform over values: the same for the same key, purpose and value
        (a reproducible sample of inputs, `--review_sample_rate`)."""
        return int.from_bytes(self.digest(purpose, value.strip())[:8], "big") / 2**64

    def date_shift_days(self, patient_key: str) -> int:
        """Days to subtract from every date of one patient: the same for all files of that patient."""
        number = int.from_bytes(self.digest("date-shift", patient_key.strip())[:8], "big")
        return 1 + number % DATE_SHIFT_MAX_DAYS
