"""The ``refquant`` command: ``report``, ``golden``, ``check``, ``identify``, ``sweep``.

Exit codes: 0 everything matched, 1 mismatches found, 2 bad usage or a bad file.
Backends (torch, torchao, onnx, ml_dtypes) are imported only by ``report``, only when installed.
"""

from __future__ import annotations

import argparse
import json
import sys

OK, MISMATCH, USAGE = 0, 1, 2


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refquant", description="Reference numerics for quantization.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("report", help="check every installed backend against its convention")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.add_argument("--only", nargs="+", metavar="BACKEND",
                   help="refquant, torch, torchao, onnx, ml_dtypes")

    def qparams(sp, dtype_default="float32"):
        sp.add_argument("--scale", type=float, required=True)
        sp.add_argument("--zero-point", type=int, default=0)
        sp.add_argument("--qmin", type=int, required=True)
        sp.add_argument("--qmax", type=int, required=True)
        sp.add_argument("--dtype", default=dtype_default,
                        choices=["float16", "bfloat16", "float32", "float64"])
        sp.add_argument("--op", default="fake_quantize", choices=["fake_quantize", "quantize"])
        sp.add_argument("--convention", default="exact")

    g = sub.add_parser("golden", help="write golden vectors (npz, json or hex)")
    qparams(g)
    g.add_argument("--n-random", type=int, default=1000)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--format", choices=["npz", "json", "hex"])
    g.add_argument("-o", "--output", required=True, help="file to write")

    c = sub.add_parser("check", help="recompute a golden file's outputs and compare bit for bit")
    c.add_argument("file")
    c.add_argument("--convention", help="check against this convention instead of the manifest's")

    i = sub.add_parser("identify", help="name the convention a golden file's outputs follow")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")

    s = sub.add_parser("sweep", help="every float16/bfloat16/float32 pattern: candidate vs reference")
    qparams(s, dtype_default="float16")
    s.add_argument("--candidate", required=True,
                   help="a convention name, or module:function taking (x) and returning y")
    s.add_argument("--progress", action="store_true",
                   help="progress on stderr (always on for float32, whose 2**32 patterns take a while)")
    s.add_argument("--scheduler", metavar="ADDRESS", help="run on a dask.distributed scheduler, tcp://host:port")
    from .checkpoint._cli import add_parser as _add_checkpoint

    _add_checkpoint(sub)
    return p


def _cmd_report(args) -> int:
    from .golden._report import BACKENDS, format_table, report

    known = {"refquant", *(name for name, _, _ in BACKENDS)}
    unknown = sorted(set(args.only or ()) - known)
    if unknown:
        raise _UsageError(f"--only: unknown backend(s) {unknown}; known: {sorted(known)}")
    rows = report(only=args.only)
    bad = any(r["mismatches"] != 0 for r in rows)
    if args.json:
        print(json.dumps({"all_matched": not bad, "rows": rows}, indent=2))
    else:
        print(format_table(rows))
        print("all backends match their conventions" if not bad else "MISMATCHES FOUND")
    return MISMATCH if bad else OK


def _cmd_golden(args) -> int:
    from .golden import cases

    g = cases(args.scale, args.zero_point, qmin=args.qmin, qmax=args.qmax, dtype=args.dtype,
              op=args.op, convention=args.convention, n_random=args.n_random, seed=args.seed)
    path = g.save(args.output, format=args.format)
    print(f"wrote {g.inputs.size} cases ({args.op}, {g.manifest['convention']}) to {path}")
    return OK


def _cmd_check(args) -> int:
    import refquant as rq

    from .golden._files import load, qparams
    from .testing import quant_mismatch_report

    g = load(args.file)
    m = g.manifest
    conv = args.convention or m["convention"]
    scale, zp = qparams(m)
    fn = rq.quantize if m["op"] == "quantize" else rq.fake_quantize
    expected = fn(g.inputs, scale, zp, qmin=m["qmin"], qmax=m["qmax"], axis=m.get("axis"),
                  convention=conv)
    text = quant_mismatch_report(g.outputs, expected, x=g.inputs, scale=scale, zero_point=zp,
                                 axis=m.get("axis"))
    if text is None:
        print(f"{args.file}: all {g.inputs.size} outputs match {conv!r} bit for bit")
        return OK
    print(f"{args.file}: outputs differ from {conv!r}\n{text}")
    return MISMATCH


def _cmd_identify(args) -> int:
    import refquant as rq

    from .golden._files import load, qparams

    g = load(args.file)
    m = g.manifest
    scale, zp = qparams(m)
    r = rq.identify(g.inputs, g.outputs, scale, zp, qmin=m["qmin"], qmax=m["qmax"], op=m["op"],
                    axis=m.get("axis"))
    if args.json:
        print(json.dumps({"matches": r.matches, "nearest": r.nearest, "causes": r.causes,
                          "mismatches": {f"{c} {k}": n for (c, k), n in r.mismatches.items()}}))
    else:
        print(r)
    return OK if r.matches else MISMATCH


def _candidate(spec: str, args):
    import refquant as rq

    if ":" in spec:
        import importlib

        module, _, name = spec.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise _UsageError(f"cannot load candidate {spec!r}: {exc}") from None
    conv = rq.conventions.get(spec)
    fn = rq.quantize if args.op == "quantize" else rq.fake_quantize
    return lambda x: fn(x, args.scale, args.zero_point, qmin=args.qmin, qmax=args.qmax, convention=conv)


def _cmd_sweep(args) -> int:
    from .golden import sweep

    cand = _candidate(args.candidate, args)
    client = None
    if args.scheduler:
        from .checkpoint._cli import connect

        client = connect(args.scheduler)
    r = sweep(cand, args.scale, args.zero_point, qmin=args.qmin, qmax=args.qmax, dtype=args.dtype,
              op=args.op, convention=args.convention,
              progress=args.progress or args.dtype == "float32", client=client)
    print(r)
    return MISMATCH if r.mismatches else OK


def _cmd_checkpoint(args) -> int:
    from .checkpoint._cli import run

    return run(args)


COMMANDS = {"report": _cmd_report, "golden": _cmd_golden, "check": _cmd_check,
            "identify": _cmd_identify, "sweep": _cmd_sweep, "checkpoint": _cmd_checkpoint}


def main(argv=None) -> int:
    """Entry point of the ``refquant`` console script; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help gives 0, bad usage 2
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE
    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, NotImplementedError, OSError, _UsageError) as exc:
        print(f"refquant {args.command}: error: {exc}", file=sys.stderr)
        return USAGE


if __name__ == "__main__":
    sys.exit(main())
