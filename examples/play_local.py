#!/usr/bin/env python3
"""Hear the avatar through your speakers (sounddevice), saying each line you type.

    python examples/play_local.py --api-key KEY                 # type lines; Ctrl-D ends
    python examples/play_local.py --api-key KEY --text "Hi!"    # one line, then exit

Needs an audio output device and the PortAudio library (Debian: libportaudio2); without one it
says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from unison_sdk import PlaybackUnavailable, UnisonError, connect


async def main(args: argparse.Namespace) -> int:
    async with connect(args.url, api_key=args.api_key) as avatar:
        try:
            player = avatar.play()
        except PlaybackUnavailable as e:
            print(f"cannot play here: {e}", file=sys.stderr)
            return 2
        async with player:
            lines = [args.text] if args.text else None
            while True:
                if lines is not None:
                    if not lines:
                        break
                    line = lines.pop(0)
                else:
                    line = await asyncio.to_thread(sys.stdin.readline)
                    if not line:
                        break
                if line.strip():
                    utt = await avatar.say(line.strip(), interrupt=True)
                    await utt
                    print(f"{utt.outcome}: {line.strip()}")
            await asyncio.sleep(0.5)  # let the last audio drain
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    p.add_argument("--api-key", default=os.environ.get("UNISON_API_KEY"), help="or $UNISON_API_KEY")
    p.add_argument("--text", default=None, help="say this once and exit (default: read stdin)")
    args = p.parse_args(argv)
    if not args.api_key:
        p.error("give --api-key or set $UNISON_API_KEY (serve prints a local key)")
    return args


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse())))
    except UnisonError as e:
        sys.exit(f"error: {e}")
