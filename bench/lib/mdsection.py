#!/usr/bin/env python3
"""Replace (or append) one section of docs/benchmarks.md between markers.

usage: mdsection.py FILE NAME < new_section.md
The section is delimited by <!-- bench:NAME:begin --> and <!-- bench:NAME:end -->.
"""
import sys, pathlib

path, name = pathlib.Path(sys.argv[1]), sys.argv[2]
body = sys.stdin.read().rstrip() + "\n"
begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
text = path.read_text() if path.exists() else "# Benchmarks\n"
block = f"{begin}\n{body}{end}\n"
if begin in text and end in text:
    pre, rest = text.split(begin, 1)
    _, post = rest.split(end, 1)
    text = pre + block + post.lstrip("\n")
else:
    text = text.rstrip() + "\n\n" + block
path.write_text(text)
