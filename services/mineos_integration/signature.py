"""MineOS's `X-Mine-Signature`: an HMAC of the raw request body.

MineOS does not publish its scheme (contract.md §2). The default is
base64(HMAC-SHA256(secret, body)); the algorithm and the encoding are settings, and several secrets
are accepted at once so that a secret can be rotated without downtime. Pure functions, no framework.
"""

import base64
import binascii
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

SIGNATURE_HEADER = "X-Mine-Signature"


class SignatureAlgorithm(StrEnum):
    SHA256 = "sha256"
    SHA1 = "sha1"
    SHA512 = "sha512"


class SignatureEncoding(StrEnum):
    BASE64 = "base64"
    HEX = "hex"


@dataclass(frozen=True)
class SignatureScheme:
    algorithm: SignatureAlgorithm = SignatureAlgorithm.SHA256
    encoding: SignatureEncoding = SignatureEncoding.BASE64

    def __str__(self) -> str:
        return f"hmac-{self.algorithm}/{self.encoding}"


ALL_SCHEMES = tuple(
    SignatureScheme(algorithm, encoding) for algorithm in SignatureAlgorithm for encoding in SignatureEncoding
)


class InvalidSignature(Exception):
    """The request is not signed by any accepted secret. The message never says why, on purpose."""


def _digest(secret: str, body: bytes, algorithm: SignatureAlgorithm) -> bytes:
    return hmac.new(secret.encode(), body, algorithm.value).digest()


def _decode(signature: str, encoding: SignatureEncoding) -> bytes | None:
    try:
        if encoding is SignatureEncoding.HEX:
            return bytes.fromhex(signature)
        return base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        return None


def sign(body: bytes, secret: str, scheme: SignatureScheme = SignatureScheme()) -> str:
    """The `X-Mine-Signature` value MineOS would send for `body` under `scheme`."""
    digest = _digest(secret, body, scheme.algorithm)
    if scheme.encoding is SignatureEncoding.HEX:
        return digest.hex()
    return base64.b64encode(digest).decode()


def verify(
    body: bytes,
    signature: str | None,
    secrets: Sequence[str],
    scheme: SignatureScheme = SignatureScheme(),
) -> None:
    """Raise InvalidSignature unless `signature` is `body` signed with one of `secrets`.

    Every secret is compared, in constant time, even after a match, so the time taken does not tell
    which secret (or how much of a signature) was right.
    """
    if not secrets:
        raise InvalidSignature("no signing secret is configured")
    received = _decode((signature or "").strip(), scheme.encoding)
    if not received:
        raise InvalidSignature("signature missing or not decodable")
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(received, _digest(secret, body, scheme.algorithm))
    if not matched:
        raise InvalidSignature("signature does not match")


def matching_schemes(
    body: bytes, signature: str, secrets: Sequence[str], schemes: Iterable[SignatureScheme] = ALL_SCHEMES
) -> list[tuple[SignatureScheme, int]]:
    """Every (scheme, secret index) under which `signature` is valid for `body`: for `probe-signature`."""
    found = []
    for scheme in schemes:
        for index, secret in enumerate(secrets):
            try:
                verify(body, signature, [secret], scheme)
            except InvalidSignature:
                continue
            found.append((scheme, index))
    return found
