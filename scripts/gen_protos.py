"""Generate the gRPC stubs in runtime/protocol/ from protos/*.proto.

Usage: python scripts/gen_protos.py [--check]

--check generates into a temporary directory and exits 1 when the committed stubs differ
(CI runs it so that edited protos cannot drift from the code that uses them).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "runtime" / "protocol"


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # dev dependency

    sources = sorted(PROTOS.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}",
            f"--pyi_out={out}", f"--grpc_python_out={out}", *map(str, sources)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for path in sorted(out.glob("*_pb2*.py*")):
        text = path.read_text()
        # protoc emits absolute imports ("import x_pb2"); the stubs live inside a package.
        text = re.sub(r"^import (\w+_pb2) as", r"from . import \1 as", text, flags=re.M)
        path.write_text(text)
        written.append(path)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when committed stubs are stale")
    ns = parser.parse_args()
    if not ns.check:
        for path in generate(OUT):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [p.name for p in fresh if not (OUT / p.name).exists()
                 or not filecmp.cmp(p, OUT / p.name, shallow=False)]
    if stale:
        print(f"stale generated stubs: {', '.join(stale)}; run `make protos`", file=sys.stderr)
        return 1
    print("generated stubs are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
