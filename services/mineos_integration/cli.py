"""Operator commands: `mineos-integration sign | probe-signature | dry-run`.

- sign: print a correctly signed request for a body, ready for curl.
- probe-signature: given a real request body MineOS sent, its X-Mine-Signature and candidate
  secrets, say which supported scheme produced it (MineOS does not publish its scheme).
- dry-run: show, per data source, what a Delete for a person would touch, changing nothing.
Secrets come from the environment (MINE_SIGNING_SECRETS), never from the command line, where they
would land in the shell history and the process list.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

from mineos_integration.contract import Identity
from mineos_integration.settings import get_settings
from mineos_integration.signature import (
    ALL_SCHEMES,
    SIGNATURE_HEADER,
    SignatureAlgorithm,
    SignatureEncoding,
    SignatureScheme,
    matching_schemes,
    sign,
)


def _read_body(path: str) -> bytes:
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


def _secrets() -> list[str]:
    secrets = get_settings().signing_secrets
    if not secrets:
        raise SystemExit("set MINE_SIGNING_SECRETS (comma-separated) in the environment")
    return secrets


def command_sign(arguments: argparse.Namespace) -> int:
    body = _read_body(arguments.body)
    scheme = SignatureScheme(SignatureAlgorithm(arguments.algorithm), SignatureEncoding(arguments.encoding))
    signature = sign(body, _secrets()[0], scheme)
    if arguments.url:
        print(
            "curl -sS -X POST -H 'Content-Type: application/json' "
            f"-H {shlex.quote(f'{SIGNATURE_HEADER}: {signature}')} "
            f"--data-binary @{shlex.quote(arguments.body)} {shlex.quote(arguments.url)}"
        )
    else:
        print(f"{SIGNATURE_HEADER}: {signature}")
    return 0


def command_probe_signature(arguments: argparse.Namespace) -> int:
    body = _read_body(arguments.body)
    found = matching_schemes(body, arguments.signature, _secrets(), ALL_SCHEMES)
    if not found:
        print(
            "No supported scheme matches: the body may have been changed (use the exact bytes MineOS "
            "sent), the secret differs, or MineOS signs differently. Tried: "
            + ", ".join(str(scheme) for scheme in ALL_SCHEMES)
        )
        return 1
    for scheme, index in found:
        print(
            f"matches {scheme} with secret #{index + 1}: set MINE_SIGNATURE_ALGORITHM={scheme.algorithm} "
            f"MINE_SIGNATURE_ENCODING={scheme.encoding}"
        )
    return 0


def command_dry_run(arguments: argparse.Namespace) -> int:
    from mineos_integration.services import data_sources  # needs the data map and the stores

    identities = {
        Identity.EMAIL: arguments.email,
        Identity.INTERNAL_ID: arguments.internal_id,
        Identity.PHONE_NUMBER: arguments.phone_number,
    }
    report = []
    for source in data_sources():
        value = identities[source.config.identity]
        entry: dict[str, object] = {"source": source.config.name, "identity": source.config.identity.value}
        if value is None:
            entry["skipped"] = "identity not given"
        else:
            entry["found"] = source.count(value)
            entry["would"] = source.config.delete.mode.value
            if source.config.delete.reason:
                entry["reason"] = source.config.delete.reason
        report.append(entry)
    print(json.dumps(report, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mineos-integration", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)

    sign_parser = commands.add_parser("sign", help="sign a request body like MineOS does")
    sign_parser.add_argument("--body", required=True, help="file with the exact JSON body, or - for stdin")
    sign_parser.add_argument("--url", help="print a whole curl command for this URL")
    sign_parser.add_argument("--algorithm", choices=[a.value for a in SignatureAlgorithm], default="sha256")
    sign_parser.add_argument("--encoding", choices=[e.value for e in SignatureEncoding], default="base64")
    sign_parser.set_defaults(run=command_sign)

    probe = commands.add_parser("probe-signature", help="find the scheme of a captured MineOS request")
    probe.add_argument("--body", required=True, help="file with the exact captured body, or - for stdin")
    probe.add_argument("--signature", required=True, help=f"the captured {SIGNATURE_HEADER} value")
    probe.set_defaults(run=command_probe_signature)

    dry_run = commands.add_parser("dry-run", help="what a Delete would touch, per source; changes nothing")
    dry_run.add_argument("--email")
    dry_run.add_argument("--internal-id")
    dry_run.add_argument("--phone-number")
    dry_run.set_defaults(run=command_dry_run)
    return root


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    result: int = arguments.run(arguments)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
