import base64
import hashlib
import hmac

import pytest

from mineos_integration.signature import (
    InvalidSignature,
    SignatureAlgorithm,
    SignatureEncoding,
    SignatureScheme,
    matching_schemes,
    sign,
    verify,
)

BODY = b'{"traceId":"t-1","integrationId":"i-1"}'
SECRET = "s3cr3t-value-for-tests"


def test_sign_default_scheme_matches_known_vector():
    expected = base64.b64encode(hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()).decode()
    assert sign(BODY, SECRET) == expected


@pytest.mark.parametrize("algorithm", list(SignatureAlgorithm))
@pytest.mark.parametrize("encoding", list(SignatureEncoding))
def test_verify_each_scheme_round_trips(algorithm, encoding):
    scheme = SignatureScheme(algorithm, encoding)
    verify(BODY, sign(BODY, SECRET, scheme), [SECRET], scheme)


def test_verify_hex_sha512_matches_hashlib_vector():
    scheme = SignatureScheme(SignatureAlgorithm.SHA512, SignatureEncoding.HEX)
    expected = hmac.new(SECRET.encode(), BODY, hashlib.sha512).hexdigest()
    verify(BODY, expected, [SECRET], scheme)


def test_verify_rotation_accepts_old_and_new_secret():
    secrets = ["new-secret-value", SECRET]
    verify(BODY, sign(BODY, SECRET), secrets)
    verify(BODY, sign(BODY, "new-secret-value"), secrets)


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "   ",
        "not base64 at all!",
        sign(BODY, SECRET)[:-6],  # truncated
        sign(BODY, SECRET)[:10] + "A" + sign(BODY, SECRET)[11:],  # garbled
        sign(BODY, "another-secret"),
        sign(BODY, SECRET, SignatureScheme(SignatureAlgorithm.SHA1)),  # wrong algorithm
        sign(BODY, SECRET, SignatureScheme(encoding=SignatureEncoding.HEX)),  # wrong encoding
        sign(BODY + b" ", SECRET),  # another body
    ],
)
def test_verify_bad_signature_raises(signature):
    with pytest.raises(InvalidSignature):
        verify(BODY, signature, [SECRET])


def test_verify_without_secrets_refuses_everything():
    with pytest.raises(InvalidSignature):
        verify(BODY, sign(BODY, SECRET), [])


def test_matching_schemes_finds_the_scheme_and_secret_used():
    scheme = SignatureScheme(SignatureAlgorithm.SHA1, SignatureEncoding.HEX)
    found = matching_schemes(BODY, sign(BODY, SECRET, scheme), ["other", SECRET])
    assert found == [(scheme, 1)]


def test_matching_schemes_unknown_signature_finds_nothing():
    assert matching_schemes(BODY, "bm90IGEgc2lnbmF0dXJl", [SECRET]) == []
