"""``refquant checkpoint PATH [--source SRC] [--format F] [--convention C] [--workers N |
--scheduler ADDRESS] [--json]``.

Exit codes: 0 every quantized weight checked and equal; 1 mismatches found; 2 bad usage or an
unreadable input (a truncated file, a header that lies); 3 some weight could not be checked or a
shard of a folder could not be read (the report says why; the rest is checked) or the run failed.
"""

from __future__ import annotations

import sys

OK, MISMATCH, USAGE, FAILURE = 0, 1, 2, 3


def add_parser(sub, parents=()) -> None:
    """Add the ``checkpoint`` subcommand to an argparse subparsers object (``parents``: the parsers
    of the options every command shares, ``--json`` among them)."""
    c = sub.add_parser("checkpoint", help="check every quantized weight of a safetensors checkpoint",
                       parents=list(parents))
    c.add_argument("path", help="a .safetensors file or a folder of shards (with its config files)")
    c.add_argument("--source", help="the float checkpoint it was quantized from (re-quantize check)")
    from ._formats import FORMATS

    c.add_argument("--format", default="auto", choices=FORMATS)
    c.add_argument("--convention", help="re-quantize under this convention instead of the format's own")
    where = c.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="processes on this machine (default: one, all cores)")
    where.add_argument("--scheduler", metavar="ADDRESS", help="a dask.distributed scheduler, tcp://host:port")
    if not parents:
        c.add_argument("--json", action="store_true", help="print the report as JSON")


def progress_line(stream=None, what="checkpoint"):
    """A progress callback writing one updated line: bytes and tensors done, time left."""
    stream = stream or sys.stderr

    def show(done, total, tensors, n_tensors, seconds):
        left = seconds * (total - done) / done if done else float("nan")
        stream.write(f"\r{what}: {done / 1e9:.3f}/{total / 1e9:.3f} GB, {tensors}/{n_tensors} tensors, "
                     f"{seconds:.1f} s, {left:.1f} s left ")
        stream.flush()
    return show


def connect(address):
    """A ``dask.distributed.Client`` of the scheduler at ``address``; a ValueError naming what is
    wrong when dask.distributed is missing or the scheduler cannot be reached."""
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--scheduler needs dask.distributed (pip install refquant[distributed])") from None
    try:
        return Client(address, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"cannot reach scheduler {address}: {exc}") from None


def _error(text) -> int:
    sys.stderr.write(f"refquant checkpoint: error: {text}\n")
    return USAGE


def run(args) -> int:
    """Run the subcommand; returns the exit code."""
    from . import check

    if args.workers is not None and args.workers < 1:
        return _error(f"--workers must be at least 1; got {args.workers}")
    try:
        client = connect(args.scheduler) if args.scheduler else None
    except (ValueError, OSError) as exc:
        return _error(str(exc))
    try:
        report = check(args.path, args.source, format=args.format, convention=args.convention,
                       client=client, workers=args.workers, progress=progress_line())
    except (ValueError, TypeError, KeyError, OSError) as exc:
        sys.stderr.write("\n")
        sys.stderr.write(f"refquant checkpoint: error: {exc}\n")
        return USAGE
    except Exception as exc:  # the run itself failed (a lost cluster, ...)
        sys.stderr.write("\n")
        sys.stderr.write(f"refquant checkpoint: failure: {type(exc).__name__}: {exc}\n")
        return FAILURE
    finally:
        if client is not None:
            client.close()
    sys.stderr.write("\n")
    sys.stdout.write(f"{report.to_json() if args.json else report}\n")
    t = report.totals
    if t["mismatch"]:
        return MISMATCH
    return FAILURE if t["cannot check"] or t["unreadable_files"] else OK
