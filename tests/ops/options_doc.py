#!/usr/bin/env python3
"""The option tables in docs/operations.md are generated from the programs' own option
definitions (`PROGRAM --options-markdown`, see src/common/options.hpp). Each table sits
between `<!-- options: PROGRAM -->` and `<!-- end options -->`.

Usage: options_doc.py DOC BINARY...            check: exit 1 and a diff if a table is stale
       options_doc.py --write DOC BINARY...    rewrite the tables
"""
import difflib
import os
import re
import subprocess
import sys

args = sys.argv[1:]
write = args[:1] == ["--write"]
if write:
    args = args[1:]
doc, binaries = args[0], args[1:]
text = open(doc).read()
new = text
for b in binaries:
    name = os.path.basename(b)
    table = subprocess.run([b, "--options-markdown"], capture_output=True, text=True, check=True).stdout
    pattern = re.compile(r"(<!-- options: %s -->\n).*?(<!-- end options -->)" % re.escape(name), re.S)
    if not pattern.search(new):
        sys.exit(f"{doc} has no <!-- options: {name} --> section")
    new = pattern.sub(lambda m: m.group(1) + table + m.group(2), new)
if write:
    open(doc, "w").write(new)
    print(f"{doc}: {len(binaries)} option tables written")
elif new != text:
    sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), doc, doc + " (generated)"))
    sys.exit(f"{doc}: option tables differ from the programs' definitions; "
             f"run python3 tests/ops/options_doc.py --write {doc} build/bin/... (or make docs-options)")
else:
    print(f"ok: {len(binaries)} option tables in {doc} match the programs")
