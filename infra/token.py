"""`make token`: mint an API token against the running stack (reads .dev/stack.env)."""

from __future__ import annotations

import argparse
import os
import socket
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


DEFAULT_ENV = ROOT / ".dev" / "stack.env"


def load_env(path: Path) -> str | None:
    """Point at the stack `path` describes (the local one's `.dev/stack.env` by default); an empty
    file (`--env /dev/null`) leaves the environment as it is, which with GOOGLE_CLOUD_PROJECT set and
    no *_EMULATOR_HOST is the real Firestore. The reason it cannot be used, or None."""
    if not path.exists():
        if path == DEFAULT_ENV:
            return (
                f"{path} not found: start the local stack first (make dev), or pass --env /dev/null to mint"
                " into the Firestore the environment points at (production: docs/deploy.md)"
            )
        return f"{path} not found"
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key and key.isupper():
            os.environ[key] = value
    emulator = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if emulator and not _listening(emulator):
        # Left behind by a stack that has stopped: the client would retry for a minute, then fail.
        return f"nothing listens on {emulator}, the Firestore emulator {path} names: is the local stack (make dev) running?"
    return None


def _listening(host_port: str) -> bool:
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.token", description="Mint a Synq API token.")
    parser.add_argument("--org", required=True)
    parser.add_argument("--tenant", required=True, help="a tenant id, several separated by commas, or *")
    parser.add_argument("--email", required=True)
    parser.add_argument("--role", default="editor", choices=["viewer", "editor", "admin"])
    parser.add_argument("--expires-in-days", type=float, default=None)
    parser.add_argument("--env", type=Path, default=DEFAULT_ENV, help="the stack's env file; /dev/null: the environment as it is")
    args = parser.parse_args()
    from common.http import is_safe_id

    tenants = args.tenant.split(",")
    if not is_safe_id(args.org) or not all(t == "*" or is_safe_id(t) for t in tenants) or "@" not in args.email:
        parser.error("--org and --tenant must be ids (1-128 letters, digits, '.', '_', ':', '-'; a tenant may be *), --email an address")
    problem = load_env(args.env)
    if problem:
        parser.exit(2, f"{parser.prog}: {problem}\n")
    from common.models.base import utcnow
    from common.store.tokens import mint_token

    expires = utcnow() + timedelta(days=args.expires_in_days) if args.expires_in_days else None
    print(
        mint_token(
            user_id=str(uuid.uuid4()),
            email=args.email,
            org_id=args.org,
            tenant_ids=tenants,
            role=args.role,
            expires_at=expires,
        )
    )


if __name__ == "__main__":
    main()
