"""PSNR in dB of two raw 8-bit videos of the same size (rgb24 frames as ffmpeg writes them), printed with
one decimal (99.0 when they are identical). With --at-least DB or --below DB the exit status says
whether the printed value meets that bound: 0 when it does, 1 when not (or when the sizes differ).

Usage: $PYTHON tests/lib/psnr.py A.rgb B.rgb [--at-least DB | --below DB]"""
import argparse
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser(description="PSNR of two raw 8-bit videos")
    ap.add_argument("a")
    ap.add_argument("b")
    bound = ap.add_mutually_exclusive_group()
    bound.add_argument("--at-least", type=float, help="exit 1 unless the PSNR is >= this")
    bound.add_argument("--below", type=float, help="exit 1 unless the PSNR is < this")
    args = ap.parse_args()
    a = np.fromfile(args.a, np.uint8).astype(float)
    b = np.fromfile(args.b, np.uint8).astype(float)
    assert a.size == b.size and a.size > 0, (a.size, b.size)
    mse = ((a - b) ** 2).mean()
    text = "%.1f" % (99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse))
    print(text)
    db = float(text)  # the bound applies to the printed value
    if args.at_least is not None and not db >= args.at_least:
        sys.exit(1)
    if args.below is not None and not db < args.below:
        sys.exit(1)


if __name__ == "__main__":
    main()
