"""The ``refquant`` command: ``report``, ``golden``, ``check``, ``identify``, ``sweep``.

Exit codes, one meaning each: 0 everything matched, 1 mismatches found, 2 bad usage or a bad
input file, 3 the candidate kernel failed (one line with its exception; ``--debug`` prints the
traceback). Every command takes ``--json`` (one JSON document on stdout) and ``--debug``.
Backends (torch, torchao, onnx, ml_dtypes) are imported only by ``report``, only when installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings

import numpy as np

OK, MISMATCH, USAGE, CANDIDATE_FAILED = 0, 1, 2, 3

ROUNDING_HELP = {
    "half_even": "nearest, ties to the even integer",
    "half_away": "nearest, ties away from zero",
    "half_up": "nearest, ties toward +inf",
    "half_down": "nearest, ties toward -inf",
    "floor": "toward -inf",
    "ceil": "toward +inf",
    "toward_zero": "truncate",
}
OP_HELP = {
    "fake_quantize": "outputs (q - z) * s in x's dtype",
    "quantize": "outputs the integer codes q",
}


class _UsageError(Exception):
    pass


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=30, width=100)


def _choices_help(intro: str, table: dict, default) -> str:
    items = "; ".join(f"{k}: {v}" for k, v in table.items())
    return f"{intro} ({items}). Default: {default}."


def _conventions_help() -> str:
    import refquant as rq

    rows = [f"{n}: {rq.conventions.get(n).backend or 'registered'}" for n in rq.conventions.names()]
    return "; ".join(rows)


def _parser() -> argparse.ArgumentParser:
    import refquant as rq

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    common.add_argument("--debug", action="store_true",
                        help="print tracebacks (a failing candidate's included) and any warnings")
    p = argparse.ArgumentParser(
        prog="refquant", description="Reference numerics for quantization.", formatter_class=_Formatter,
        epilog="exit codes: 0 equal, 1 mismatch, 2 usage or input error, 3 the candidate failed")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    conv_names = rq.conventions.names()
    conv_names += [n for n in rq.float_conventions.names() if n not in conv_names]

    def add(name, help_text):
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common],
                              formatter_class=_Formatter)

    r = add("report", "check every installed backend against its convention")
    r.add_argument("--only", nargs="+", metavar="BACKEND",
                   help="run only these: refquant, torch, torchao, onnx, ml_dtypes. Default: all")

    def convention(sp, default, what):
        sp.add_argument("--convention", default=default, choices=conv_names, metavar="NAME",
                        help=f"{what}, one of: {_conventions_help()}. Default: {default or 'the file'}.")

    def rounding(sp, what):
        sp.add_argument("--rounding", choices=list(ROUNDING_HELP), metavar="MODE",
                        help=_choices_help(what, ROUNDING_HELP, "the convention's own"))

    def qparams(sp, dtypes, default_dtype):
        sp.add_argument("--scale", type=float, nargs="+", metavar="S",
                        help="the scale: one value, one per channel with --axis, one per block "
                        "with --block-size (required for integer ranges; default 1 with --fmt)")
        sp.add_argument("--zero-point", type=_number, nargs="+", default=[0], metavar="Z",
                        help="the zero point: one value or one per channel/block. Default: 0")
        sp.add_argument("--qmin", type=int, help="smallest code, e.g. -128 (or give --fmt)")
        sp.add_argument("--qmax", type=int, help="largest code, e.g. 127 (or give --fmt)")
        sp.add_argument("--fmt", metavar="FORMAT",
                        help="a float format instead of --qmin/--qmax: one of "
                        f"{', '.join(rq.floatformats.NAMED_FLOAT_FORMATS)} (the element cast of x / s; "
                        "--convention then names a float convention)")
        sp.add_argument("--saturate", choices=["true", "false"],
                        help="with --fmt: overflow to +-max (true) or IEEE inf/NaN (false). Default: "
                        "the convention's own")
        sp.add_argument("--dtype", default=default_dtype, choices=dtypes, metavar="DTYPE",
                        help=f"input dtype, one of {', '.join(dtypes)}. Default: {default_dtype}")
        sp.add_argument("--op", default="fake_quantize", choices=list(OP_HELP), metavar="OP",
                        help=_choices_help("operation", OP_HELP, "fake_quantize"))
        convention(sp, "exact", "the reference convention")
        rounding(sp, "rounding mode of the reference")

    g = add("golden", "write golden vectors (npz, json or hex); with --candidate, your kernel's "
            "outputs beside the reference's")
    qparams(g, ["float16", "bfloat16", "float32", "float64"], "float32")
    g.add_argument("--axis", type=int, choices=[0, 1, -1, -2], metavar="AXIS",
                   help="per-channel cases: 2-D inputs with the channels along AXIS (0, 1, -1, -2), "
                   "one --scale per channel. Default: per-tensor")
    g.add_argument("--block-size", type=int, nargs=2, metavar=("B0", "B1"),
                   help="per-block cases: blocks of B0 x B1 elements (torchao's block_size), one "
                   "--scale per block along the columns. Default: per-tensor")
    g.add_argument("--candidate", metavar="SPEC",
                   help="MODULE:FUNCTION or path/to/file.py:FUNCTION (or a convention name) run on the "
                   "inputs; its outputs are stored as the file's outputs and the reference's beside them")
    g.add_argument("--n-random", type=int, default=1000, help="random inputs added. Default: 1000")
    g.add_argument("--seed", type=int, default=0, help="seed of the random inputs. Default: 0")
    g.add_argument("--format", choices=["npz", "json", "hex"], metavar="FORMAT",
                   help="npz (NumPy zip), json (hex strings), hex ($readmemh words). Default: from "
                   "the suffix of --output")
    g.add_argument("-o", "--output", required=True, help="file to write")

    c = add("check", "recompute a golden file's reference outputs and compare bit for bit, with a "
            "diagnosis of any difference")
    c.add_argument("file", help="a golden file (.npz, .json, .hex)")
    convention(c, None, "check against this convention instead of the one recorded in the file")
    rounding(c, "check under this rounding mode instead of the file's")

    i = add("identify", "name the convention a golden file's outputs follow, and why others differ")
    i.add_argument("file", help="a golden file (.npz, .json, .hex), e.g. one written by golden --candidate")
    i.add_argument("--reference", choices=conv_names, metavar="NAME",
                   help="explain the differences from this convention. Default: the file's")
    rounding(i, "rounding mode of the reference")

    s = add("sweep", "every float16/bfloat16/float32 bit pattern: candidate vs reference")
    qparams(s, ["float16", "bfloat16", "float32"], "float16")
    s.add_argument("--candidate", required=True, metavar="SPEC",
                   help="a convention name, MODULE:FUNCTION or path/to/file.py:FUNCTION taking x "
                   "(1-D) and returning y")
    s.add_argument("--progress", action="store_true",
                   help="progress with the time left on stderr (always on for float32)")
    s.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a dask.distributed scheduler, tcp://host:port (same result)")
    from .checkpoint._cli import add_parser as _add_checkpoint

    _add_checkpoint(sub, parents=[common])
    return p


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)


def _qparam(values, shape=None):
    if shape is None and len(values) == 1:
        return values[0]
    return values if shape is None else [values]


def _granularity(args):
    """(scale, zero_point, axis, block_size) from the command line."""
    axis = getattr(args, "axis", None)
    block = getattr(args, "block_size", None)
    if axis is not None and block is not None:
        raise _UsageError("give --axis or --block-size, not both")
    n, nz = len(args.scale), len(args.zero_point)
    if nz not in (1, n):
        raise _UsageError(f"--zero-point takes 1 value or one per --scale value ({n}); got {nz}")
    if axis is None and block is None:
        if n != 1:
            raise _UsageError(f"{n} --scale values need --axis or --block-size")
        return args.scale[0], args.zero_point[0], None, None
    if block is not None:
        zp = [args.zero_point * n if nz == 1 else args.zero_point]
        return [args.scale], zp, None, tuple(block)
    return args.scale, args.zero_point if nz == n else args.zero_point[0], axis, None


def _emit(args, doc: dict, text: str) -> None:
    print(json.dumps(doc, indent=2, default=str) if args.json else text)


def _cmd_report(args) -> int:
    from .golden._report import BACKENDS, environment, format_table, report

    known = {"refquant", *(name for name, _, _ in BACKENDS)}
    unknown = sorted(set(args.only or ()) - known)
    if unknown:
        raise _UsageError(f"--only: unknown backend(s) {unknown}; known: {sorted(known)}")

    def progress(i, n, name):
        print(f"report: [{i}/{n}] {name}", file=sys.stderr, flush=True)

    rows = report(only=args.only, progress=progress)
    bad = any(r["mismatches"] != 0 for r in rows)
    env = environment()
    text = format_table(rows) + "\n" + ("all backends match their conventions" if not bad
                                        else "MISMATCHES FOUND")
    _emit(args, {"all_matched": not bad, "rows": rows, **env}, text)
    return MISMATCH if bad else OK


def _float_args(args):
    """(fmt, scale, saturate) for --fmt, after checking that no integer-only option is given."""
    from .golden._float import resolve_format

    fmt = resolve_format(args.fmt)
    extra = [o for o, v in (("--qmin", args.qmin), ("--qmax", args.qmax),
                            ("--axis", getattr(args, "axis", None)),
                            ("--block-size", getattr(args, "block_size", None))) if v is not None]
    if extra or args.zero_point != [0]:
        raise _UsageError(f"--fmt {args.fmt} is per tensor with no qmin/qmax or zero point; got "
                          f"{', '.join(extra + (['--zero-point'] if args.zero_point != [0] else []))}")
    if args.scale is not None and len(args.scale) != 1:
        raise _UsageError("--fmt takes one --scale")
    scale = 1.0 if args.scale is None else args.scale[0]
    return fmt, scale, None if args.saturate is None else args.saturate == "true"


def _integer_args(args):
    if args.saturate is not None:
        raise _UsageError("--saturate goes with --fmt (a float format)")
    missing = [o for o, v in (("--scale", args.scale), ("--qmin", args.qmin), ("--qmax", args.qmax))
               if v is None]
    if missing:
        raise _UsageError(f"{', '.join(missing)} required (or --fmt FORMAT for a float format)")
    import refquant as rq

    if args.convention not in rq.conventions.names():
        raise _UsageError(f"--convention {args.convention!r} is a float convention; give --fmt, or one "
                          f"of {', '.join(rq.conventions.names())}")


def _cmd_golden(args) -> int:
    from .golden import cases
    from .golden._candidates import CandidateError, as_kernel, call

    if args.fmt is not None:
        from .golden._float import as_float_kernel

        fmt, scale, saturate = _float_args(args)
        g = cases(scale, fmt=fmt, dtype=args.dtype, op=args.op, convention=args.convention,
                  saturate=saturate, rounding=args.rounding, n_random=args.n_random, seed=args.seed)
        kind = f"{args.op}, {fmt.name}"

        def kernel_of(spec):
            return as_float_kernel(spec, op=args.op, fmt=fmt, scale=scale)
    else:
        _integer_args(args)
        scale, zp, axis, block = _granularity(args)
        g = cases(scale, zp, qmin=args.qmin, qmax=args.qmax, dtype=args.dtype, op=args.op,
                  convention=args.convention, axis=axis, block_size=block, rounding=args.rounding,
                  n_random=args.n_random, seed=args.seed)
        kind = args.op

        def kernel_of(spec):
            return as_kernel(spec, op=args.op, scale=scale, zero_point=zp, qmin=args.qmin,
                             qmax=args.qmax, axis=axis, block_size=block, rounding=args.rounding,
                             dtype=args.dtype)
    what = "reference outputs"
    if args.candidate:
        kernel, label = kernel_of(args.candidate)
        y = call(kernel, g.inputs.copy(), label)
        try:
            g = g.with_outputs(y)
        except (TypeError, ValueError) as exc:
            raise CandidateError(f"candidate {label} returned unusable outputs: {exc}") from None
        g.manifest["candidate"] = label
        what = f"outputs of {label} beside the reference outputs"
    path = g.save(args.output, format=args.format)
    _emit(args, {"path": str(path), "cases": int(g.inputs.size), "manifest": g.manifest},
          f"wrote {g.inputs.size} cases ({kind}, {g.manifest['convention']}; {what}) to {path}")
    return OK


def _load(args, convention):
    """The golden file ``args.file`` and, for an integer one, the Setting it was made with, under
    the convention named ``convention`` and the rounding ``args.rounding`` where given (None for a
    float or block file: no integer convention or qparams)."""
    import refquant as rq

    from .golden._diagnose import Setting
    from .golden._files import convention_of, load, qparams

    g = load(args.file)
    m = g.manifest
    if "fmt" in m or "block_format" in m:
        return g, None
    conv = convention_of(m)
    block = None if m.get("block_size") is None else tuple(m["block_size"])
    return g, Setting(m["op"], *qparams(m), m["qmin"], m["qmax"],
                      rq.conventions.get(convention) if convention else conv, m.get("axis"), block,
                      args.rounding or m.get("rounding"))


def _cmd_check_block(args, g) -> int:
    from .golden._block import check_outputs

    doc = check_outputs(g, convention=args.convention)
    lines = doc.pop("lines")
    doc["file"] = str(args.file)
    head = (f"{args.file}: all {doc['elements']} outputs match {doc['convention']} ({doc['fmt']}) bit for bit"
            if doc["equal"] else f"{args.file}: outputs differ from {doc['convention']} ({doc['fmt']})")
    _emit(args, doc, "\n".join([head, *([] if doc["equal"] else lines), *doc["notes"]]))
    return OK if doc["equal"] and not doc["notes"] else MISMATCH


def _cmd_check_float(args, g) -> int:
    if "block_format" in g.manifest:
        return _cmd_check_block(args, g)
    from .golden._float import float_setting

    return _check_done(args, g, float_setting(g.manifest, convention=args.convention,
                                              rounding=args.rounding))


def _check_done(args, g, setting) -> int:
    """``refquant check`` of an integer or float golden file against ``setting``: the stored
    reference recomputed (for a float file an input with no output there is passed over), the
    outputs diagnosed, the report emitted; the exit code."""
    import refquant as rq

    from .golden._diagnose import diagnose, same
    from .golden._files import knob_differences

    floats = setting.fmt is not None
    conv = setting.conv
    name, variant = conv.name, knob_differences(conv, rq.float_conventions if floats else rq.conventions)
    head = {"file": str(args.file), **({"fmt": setting.fmt.name} if floats else {}), "convention": name,
            "knobs_differing_from_named_row": variant,
            "rounding": conv.rounding if floats else setting.rounding}  # a float row holds its rounding
    label = f"{name} to {setting.fmt.name}" if floats else name
    label += f" ({', '.join(variant)})" if variant else ""
    notes = []
    missing = setting.no_code(g.inputs)
    if g.reference is not None:
        with np.errstate(all="ignore"):
            stored = setting.run(np.where(missing, np.zeros((), g.inputs.dtype), g.inputs))
        if not bool((same(stored, g.reference) | (missing & floats)).all()):
            notes.append("the file's stored reference outputs differ from this recomputation")
    d = diagnose(g.inputs, g.outputs, setting, family="float" if floats else "affine")
    if d.note:
        raise ValueError(d.note)
    source = "candidate outputs" if g.manifest.get("outputs") == "candidate" else "outputs"
    doc = {**head, "equal": d.differing == 0, "elements": d.size, "differing": d.differing,
           "causes": d.causes, "explained_by": d.explained_by, "ambiguous": d.ambiguous,
           "examples": d.examples, **({"skipped": d.skipped} if floats else {}), "notes": notes}
    if d.differing == 0:
        text = f"{args.file}: all {d.size - (d.skipped if floats else 0)} {source} match {label} bit for bit"
    else:
        text = "\n".join([f"{args.file}: {source} differ from {label}", *d.lines(name)])
    _emit(args, doc, "\n".join([text, *notes]))
    return OK if d.differing == 0 and not notes else MISMATCH


def _cmd_identify_float(args, g) -> int:
    import refquant as rq

    if "block_format" in g.manifest:
        from .golden._block import block_setting

        fmt, conv, scale = block_setting(g.manifest, convention=args.reference)
        r = rq.identify(g.inputs, g.outputs, scale, fmt=fmt, reference=conv)
        _emit(args, r.to_dict(), str(r))
        return OK if r.matches else MISMATCH

    from .golden._float import float_setting

    setting = float_setting(g.manifest, convention=args.reference, rounding=args.rounding)
    r = rq.identify(g.inputs, g.outputs, setting.scale, fmt=setting.fmt, op=g.manifest["op"],
                    reference=setting.conv)
    _emit(args, r.to_dict(), str(r))
    return OK if r.matches else MISMATCH


def _cmd_check(args) -> int:
    g, setting = _load(args, args.convention)
    return _cmd_check_float(args, g) if setting is None else _check_done(args, g, setting)


def _cmd_identify(args) -> int:
    import refquant as rq

    g, s = _load(args, args.reference)
    if s is None:
        return _cmd_identify_float(args, g)
    ref = s.convention if s.rounding is None else s.convention.replace(rounding=s.rounding)
    r = rq.identify(g.inputs, g.outputs, s.scale, s.zero_point, qmin=s.qmin, qmax=s.qmax, op=s.op,
                    axis=s.axis, block_size=s.block_size, reference=ref)
    _emit(args, r.to_dict(), str(r))
    return OK if r.matches else MISMATCH


def _cmd_sweep(args) -> int:
    from .golden import sweep

    client = None
    if args.scheduler:
        from .checkpoint._cli import connect

        client = connect(args.scheduler)
    if args.fmt is not None:
        fmt, scale, saturate = _float_args(args)
        r = sweep(args.candidate, scale, fmt=fmt, dtype=args.dtype, op=args.op,
                  convention=args.convention, saturate=saturate, rounding=args.rounding,
                  progress=args.progress or args.dtype == "float32", client=client)
        return _sweep_done(args, r)
    _integer_args(args)
    scale, zp = args.scale, args.zero_point
    if len(scale) != 1 or len(zp) != 1:
        raise _UsageError("sweep is per-tensor: give one --scale and one --zero-point")
    r = sweep(args.candidate, scale[0], zp[0], qmin=args.qmin, qmax=args.qmax, dtype=args.dtype,
              op=args.op, convention=args.convention, rounding=args.rounding,
              progress=args.progress or args.dtype == "float32", client=client)
    return _sweep_done(args, r)


def _sweep_done(args, r) -> int:
    doc = {"dtype": r.dtype, "convention": r.convention, "total": r.total, "mismatches": r.mismatches,
           "skipped": r.skipped, "seconds": r.seconds, "examples": r.examples,
           "diagnosis_scope": r.diagnosis_scope,
           "diagnosis": None if r.diagnosis is None else r.diagnosis.to_dict()}
    _emit(args, doc, str(r))
    return MISMATCH if r.mismatches else OK


def _cmd_checkpoint(args) -> int:
    from .checkpoint._cli import run

    return run(args)


COMMANDS = {"report": _cmd_report, "golden": _cmd_golden, "check": _cmd_check,
            "identify": _cmd_identify, "sweep": _cmd_sweep, "checkpoint": _cmd_checkpoint}


def main(argv=None) -> int:
    """Entry point of the ``refquant`` console script; returns the exit code."""
    from .golden._candidates import CandidateError

    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help gives 0, bad usage 2
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE
    debug = args.debug
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = COMMANDS[args.command](args)
        except BrokenPipeError:  # stdout closed early (| head): nothing more to say
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (keeps Python's exit flush quiet)
            code = OK
        except CandidateError as exc:
            print(f"refquant {args.command}: candidate failed: {exc}", file=sys.stderr)
            if debug:
                traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
            code = CANDIDATE_FAILED
        except (ValueError, TypeError, NotImplementedError, OSError, _UsageError) as exc:
            print(f"refquant {args.command}: error: {exc}", file=sys.stderr)
            if debug:
                traceback.print_exc(file=sys.stderr)
            code = USAGE
        except Exception as exc:  # a bug in refquant: one line, the traceback with --debug
            print(f"refquant {args.command}: internal error: {type(exc).__name__}: {exc} "
                  "(run with --debug for the traceback)", file=sys.stderr)
            if debug:
                traceback.print_exc(file=sys.stderr)
            code = USAGE
    if debug:
        for w in caught:
            print(f"refquant {args.command}: warning: {w.category.__name__}: {w.message} "
                  f"({w.filename}:{w.lineno})", file=sys.stderr)
    return code

if __name__ == "__main__":
    sys.exit(main())
