#!/usr/bin/env python3
"""Say something and record it to an mp4 with the Python SDK (unison_sdk).

    .venv/bin/unison-stream serve --engine fake           # in another terminal (prints a key)
    python examples/python_client.py --api-key KEY --text "Hello there!" -o out/hello.mp4

The API key may also come from $UNISON_API_KEY. Prints each event as it arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from unison_sdk import UnisonError, UtteranceEvent, connect


async def main(args: argparse.Namespace) -> int:
    async with connect(args.url, api_key=args.api_key, caption=args.caption) as avatar:
        print(f"session {avatar.session_id}: {avatar.media}")
        rec = avatar.record(args.output)
        await asyncio.sleep(args.lead_s)  # a little idle before speaking
        utt = await avatar.say(args.text)
        async for ev in utt:
            print(f"  {ev.event:<11} at {ev.media_time_s:6.2f} s")
        await asyncio.sleep(args.tail_s)
        path = await rec.stop()
        print(f"wrote {path} ({rec.frames} video frames); outcome: {utt.outcome}")
        assert all(isinstance(e, UtteranceEvent) for e in utt.events)
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    p.add_argument("--api-key", default=os.environ.get("UNISON_API_KEY"), help="or $UNISON_API_KEY")
    p.add_argument("--text", default="Hello there, nice to meet you!")
    p.add_argument("--caption", default="", help="scene caption of the session")
    p.add_argument("-o", "--output", default="out/python_client.mp4")
    p.add_argument("--lead-s", type=float, default=0.5, help="recorded idle before speaking")
    p.add_argument("--tail-s", type=float, default=0.5, help="recorded idle after speaking")
    args = p.parse_args(argv)
    if not args.api_key:
        p.error("give --api-key or set $UNISON_API_KEY (serve prints a local key)")
    return args


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse())))
    except UnisonError as e:
        sys.exit(f"error: {e}")
