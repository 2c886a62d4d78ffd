"""`make token`: mint an API token against the running stack (reads .dev/stack.env)."""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_env(path: Path) -> None:
    """Point at the local stack when its env file exists; otherwise use the environment as it is
    (with GOOGLE_CLOUD_PROJECT set and no *_EMULATOR_HOST, that is the real Firestore)."""
    if not path.exists():
        print(f"{path} not found: using the environment as it is", file=sys.stderr)
        return
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key and key.isupper():
            os.environ[key] = value


def main() -> None:
    parser = argparse.ArgumentParser(description="Mint a Synq API token.")
    parser.add_argument("--org", required=True)
    parser.add_argument("--tenant", required=True, help="a tenant id, several separated by commas, or *")
    parser.add_argument("--email", required=True)
    parser.add_argument("--role", default="editor", choices=["viewer", "editor", "admin"])
    parser.add_argument("--expires-in-days", type=float, default=None)
    parser.add_argument("--env", default=str(ROOT / ".dev" / "stack.env"))
    args = parser.parse_args()
    from common.http import is_safe_id

    tenants = args.tenant.split(",")
    if not is_safe_id(args.org) or not all(t == "*" or is_safe_id(t) for t in tenants) or "@" not in args.email:
        parser.error("--org and --tenant must be ids (1-128 letters, digits, '.', '_', ':', '-'; a tenant may be *), --email an address")
    load_env(Path(args.env))
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
