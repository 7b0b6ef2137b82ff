#!/usr/bin/env python3
"""Render a clip offline, faster or slower than real time, with no server: the engine itself.

    python examples/render_offline.py "Hello <wave> nice to see you <clap>" -o out/offline.mp4
    python examples/render_offline.py --audio speech.wav -o out/dubbed.mp4   # audio-driven
    python examples/render_offline.py "Hi" --checkpoint ckpt.safetensors --set sampler.steps=2

Uses the server-side package (unison_stream, with torch), not the SDK.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("text", nargs="?", default=None, help="text with optional <tags>")
    p.add_argument("-o", "--output", default="out/offline.mp4")
    p.add_argument("--audio", default=None, help="speech file: audio-driven mode")
    p.add_argument("--checkpoint", default=None, help="safetensors checkpoint (default: random)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--caption", default="a person talking in a quiet room")
    p.add_argument("--identity", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="config override key=value")
    args = p.parse_args(argv)
    if args.text is None and args.audio is None:
        p.error("give TEXT or --audio")

    from unison_stream.render import render  # torch is imported only when rendering

    path = render(
        args.text or "",
        Path(args.output),
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        preset=args.preset,
        overrides=args.set,
        caption=args.caption,
        identity=args.identity,
        seed=args.seed,
        audio=Path(args.audio) if args.audio else None,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
