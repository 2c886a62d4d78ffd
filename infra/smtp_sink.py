"""The local stack's mail server: every message it receives becomes an .eml file in a folder."""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class WriteEml:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
        (self.folder / name).write_bytes(envelope.original_content or envelope.content)
        return "250 Message accepted"


def main() -> None:
    parser = argparse.ArgumentParser(description="SMTP sink writing .eml files.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    controller = Controller(WriteEml(folder), hostname="127.0.0.1", port=args.port)
    controller.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
