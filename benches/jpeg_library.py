"""A library of large JPEGs from real photographs, and the PIL anchor that decodes it (issue 26).

    python benches/jpeg_library.py make OUT [--count N] [--megapixels 12]
    python benches/jpeg_library.py pil-draft DIR [--side 256] [--workers 2]

`make` takes the Debian wallpapers (mate-backgrounds, plasma-workspace-wallpapers,
lomiri-wallpapers-16.04: install them first), the largest file of each picture, scales each one
to about 12 MP (Lanczos) and writes three kinds of file in turn:
  - baseline: 4:2:0, quality 92, optimised Huffman tables off (what cameras write);
  - progressive: 4:2:0, quality 92, libjpeg's default scan script (what web tools write);
  - rotated: baseline, the pixels stored turned a quarter turn with EXIF Orientation 6
    (what phones write when held upright).
Each picture is cropped differently per file (so no two files are the same photo); pictures
are reused until there are N files. The files are deterministic for a given set of sources.

`pil-draft` is the anchor: Pillow's `Image.draft()` (libjpeg-turbo's scaled decoding, the
fastest decode PIL offers) to a short side of at least SIDE, then `load()`, in WORKERS
processes. It prints one JSON line with photos/s. Needs Pillow (pip install pillow).
"""

import argparse
import glob
import json
import os
import sys
import time
from multiprocessing import Pool

from PIL import Image

SOURCE_GLOBS = [
    "/usr/share/backgrounds/**/*.jpg",
    "/usr/share/backgrounds/**/*.png",
    "/usr/share/wallpapers/**/*.jpg",
    "/usr/share/wallpapers/**/*.png",
]
KINDS = ["baseline", "progressive", "rotated"]


def picture_key(path):
    """Plasma ships one picture at many sizes under <name>/contents/images/: one key each."""
    parts = path.split(os.sep)
    if "contents" in parts:
        return os.sep.join(parts[: parts.index("contents")])
    return path


def sources(min_side=1000):
    best = {}
    for pattern in SOURCE_GLOBS:
        for path in sorted(glob.glob(pattern, recursive=True)):
            try:
                with Image.open(path) as im:
                    size = im.size
            except OSError:
                continue
            if min(size) < min_side:
                continue
            key = picture_key(path)
            if key not in best or size[0] * size[1] > best[key][1][0] * best[key][1][1]:
                best[key] = (path, size)
    return [best[k][0] for k in sorted(best)]


def exif_orientation_6():
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def make_one(source, index, megapixels, out):
    kind = KINDS[index % len(KINDS)]
    with Image.open(source) as im:
        im = im.convert("RGB")
    # a different crop per file: trim up to 10 % from a side chosen by the index
    w, h = im.size
    trim = 0.02 + 0.08 * ((index * 37) % 11) / 10
    box = [(0, 0, int(w * (1 - trim)), h), (int(w * trim), 0, w, h),
           (0, int(h * trim), w, h), (0, 0, w, int(h * (1 - trim)))][index % 4]
    im = im.crop(box)
    scale = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
    name = os.path.join(out, f"{index:04d}-{kind}.jpg")
    options = dict(quality=92, subsampling=2)
    if kind == "progressive":
        options["progressive"] = True
    if kind == "rotated":
        # stored turned a quarter turn anticlockwise; Orientation 6 turns it back
        im = im.transpose(Image.ROTATE_90)
        options["exif"] = exif_orientation_6()
    im.save(name, "JPEG", **options)
    return name


def make(args):
    os.makedirs(args.out, exist_ok=True)
    pictures = sources()
    if not pictures:
        sys.exit("no wallpapers found: apt-get install mate-backgrounds "
                 "plasma-workspace-wallpapers lomiri-wallpapers-16.04")
    jobs = [(pictures[i % len(pictures)], i, args.megapixels, args.out) for i in range(args.count)]
    with Pool(args.workers) as pool:
        names = pool.starmap(make_one, jobs)
    print(json.dumps({"files": len(names), "pictures": len(pictures), "out": args.out}))


def draft_decode(path, side):
    with Image.open(path) as im:
        im.draft("RGB", (side, side))
        im.load()
        return im.size


def pil_draft(args):
    files = sorted(glob.glob(os.path.join(args.dir, "*.jpg")))
    start = time.perf_counter()
    with Pool(args.workers) as pool:
        sizes = pool.starmap(draft_decode, [(f, args.side) for f in files], chunksize=4)
    seconds = time.perf_counter() - start
    print(json.dumps({"anchor": "pil-draft", "pillow": Image.__version__, "files": len(files),
                      "workers": args.workers, "side": args.side, "seconds": round(seconds, 2),
                      "photos_per_s": round(len(files) / seconds, 1),
                      "first_size": sizes[0] if sizes else None}))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make")
    p.add_argument("out")
    p.add_argument("--count", type=int, default=210)
    p.add_argument("--megapixels", type=float, default=12.0)
    p.add_argument("--workers", type=int, default=2)
    p = sub.add_parser("pil-draft")
    p.add_argument("dir")
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    make(args) if args.command == "make" else pil_draft(args)


if __name__ == "__main__":
    main()
