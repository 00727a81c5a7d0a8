"""rqt.fake_quantize against torch.fake_quantize_per_tensor_affine, in one run.

Prints the best-of-N wall time of forward + backward on a 4096x4096 float32 CPU tensor for torch
and for rqt.fake_quantize under the "torch.fake_quantize" and "exact" conventions, with the
ratios, and the per-call time on a 64-element tensor (forward; forward with x requiring grad;
forward + backward, next to torch's own), next to the core's own per-call time on the same data
(the difference is the adapter's overhead), and rqt.pact's (in the same alternating rounds).
Then, with torch.ao as the peer: a QAT step (forward, backward, SGD) of a Conv-Conv-Linear
model prepared by rqt.prepare_qat against the same model built with torch.ao's QAT modules and
FakeQuantize (best of 100 alternating steps; then the median CPU time of one thread with torch
and Numba on one thread), and the forward of rqt.nn.reference.Linear / Conv2d
against torch.ao's reference modules.

    python benchmarks/bench_torch.py
"""

from __future__ import annotations

import warnings

import torch
from _common import best, best_pair, best_rounds, fwd_bwd

import refquant as rq
import refquant_torch as rqt


def main():
    torch.manual_seed(0)
    x = torch.randn(4096, 4096)
    g = torch.randn(4096, 4096)
    scale, zp = 0.05, 3
    t_torch = best(fwd_bwd(lambda t: torch.fake_quantize_per_tensor_affine(t, scale, zp, 0, 255),
                           x, g), 5)
    print(f"torch.fake_quantize_per_tensor_affine fwd+bwd 4096x4096 f32: {t_torch * 1e3:8.1f} ms")
    for conv in ("torch.fake_quantize", "exact"):
        t = best(fwd_bwd(lambda t, c=conv: rqt.fake_quantize(t, scale, zp, qmin=0, qmax=255,
                                                            convention=c), x, g), 5)
        print(f"rqt.fake_quantize [{conv:>19}] fwd+bwd:             {t * 1e3:8.1f} ms"
              f"   ratio {t / t_torch:5.2f}x")

    small = torch.randn(64)
    small_np = small.numpy()
    small_req = small.clone().requires_grad_()
    sg = torch.ones(64)
    alpha = torch.tensor([1.0], requires_grad=True)
    calls = {  # per-call times on 64 elements, measured in alternation (best of many rounds)
        "core": lambda: rq.fake_quantize(small_np, scale, zp, qmin=0, qmax=255),
        "fwd": lambda: rqt.fake_quantize(small, scale, zp, qmin=0, qmax=255),
        "fwd_req": lambda: rqt.fake_quantize(small_req, scale, zp, qmin=0, qmax=255),
        "fb": fwd_bwd(lambda t: rqt.fake_quantize(t, scale, zp, qmin=0, qmax=255), small, sg),
        "torch_fwd": lambda: torch.fake_quantize_per_tensor_affine(small, scale, zp, 0, 255),
        "torch_fb": fwd_bwd(lambda t: torch.fake_quantize_per_tensor_affine(t, scale, zp, 0, 255),
                            small, sg),
        "pact": lambda: rqt.pact(small, 1.0, bits=4),
        "pact_fb": fwd_bwd(lambda t: rqt.pact(t, alpha, bits=4), small, sg),
    }
    t = best_rounds(calls, rounds=200, calls=10)
    print(f"64 elements: core rq.fake_quantize {t['core'] * 1e6:7.1f} us/call; rqt forward "
          f"{t['fwd'] * 1e6:7.1f} us/call (adapter overhead {(t['fwd'] - t['core']) * 1e6:6.1f} us); "
          f"forward with x requiring grad {t['fwd_req'] * 1e6:7.1f} us/call; "
          f"torch.fake_quantize_per_tensor_affine {t['torch_fwd'] * 1e6:7.1f} us/call")
    print(f"64 elements forward+backward: rqt {t['fb'] * 1e6:7.1f} us/call; "
          f"torch.fake_quantize_per_tensor_affine {t['torch_fb'] * 1e6:7.1f} us/call   "
          f"ratio {t['fb'] / t['torch_fb']:5.2f}x")
    print(f"64 elements rqt.pact (learnable alpha in the backward): forward "
          f"{t['pact'] * 1e6:7.1f} us/call; forward+backward {t['pact_fb'] * 1e6:7.1f} us/call")


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, stride=2),
        torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32 * 15 * 15, 10))


def _torch_ao_qat(model):
    import torch.ao.nn.qat as nnqat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qconfig = torch.ao.quantization.get_default_qat_qconfig("x86", version=0)
        for name, child in list(model.named_children()):
            cls = {torch.nn.Linear: nnqat.Linear, torch.nn.Conv2d: nnqat.Conv2d}.get(type(child))
            if cls is not None:
                child.qconfig = qconfig
                setattr(model, name, torch.nn.Sequential(cls.from_float(child), qconfig.activation()))
    return model


def _one_thread_cpu_medians(fn_a, fn_b, repeat):
    """Median CPU time of this thread per call of two functions run alternately, with torch and
    Numba on one thread (a measure that other processes' load moves far less than wall time)."""
    import time

    import numba

    threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        fn_a(), fn_b()
        times = [[], []]
        for _ in range(repeat):
            for fn, t in zip((fn_a, fn_b), times, strict=True):
                t0 = time.thread_time()
                fn()
                t.append(time.thread_time() - t0)
    finally:
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
    return [sorted(t)[len(t) // 2] for t in times]


def qat_and_reference():
    x = torch.randn(32, 3, 32, 32)
    target = torch.randint(0, 10, (32,))

    def step(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def run():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), target).backward()
            opt.step()

        return run

    t_ao, t_rq = best_pair(step(_torch_ao_qat(_model())), step(rqt.prepare_qat(_model())), 100)
    print(f"QAT step Conv-Conv-Linear batch 32: torch.ao FakeQuantize {t_ao * 1e3:7.2f} ms; "
          f"rqt.prepare_qat {t_rq * 1e3:7.2f} ms   ratio {t_rq / t_ao:5.2f}x")
    m_ao, m_rq = _one_thread_cpu_medians(step(_torch_ao_qat(_model())),
                                         step(rqt.prepare_qat(_model())), 30)
    print(f"QAT step, CPU time on one thread (torch and Numba), median: torch.ao {m_ao * 1e3:7.2f} "
          f"ms; rqt.prepare_qat {m_rq * 1e3:7.2f} ms   ratio {m_rq / m_ao:5.2f}x")

    from torch.ao.nn.quantized import reference as R

    cases = [
        ("Linear 256->128 per-channel, batch 32", torch.nn.Linear(256, 128), torch.randn(32, 256)),
        ("Conv2d 16->32 3x3 per-channel, 8x16x32x32", torch.nn.Conv2d(16, 32, 3),
         torch.randn(8, 16, 32, 32)),
    ]
    for label, float_mod, inp in cases:
        n = float_mod.weight.shape[0]
        qparams = {"qscheme": torch.per_channel_affine, "dtype": torch.qint8, "axis": 0,
                   "scale": torch.rand(n) * 0.01 + 0.001, "zero_point": torch.zeros(n, dtype=torch.int)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = getattr(R, type(float_mod).__name__).from_float(float_mod, qparams)
            ours = getattr(rqt.nn.reference, type(float_mod).__name__).from_float(float_mod, qparams)
            with torch.no_grad():
                t_ao, t_rq = best_pair(lambda m=theirs, i=inp: m(i), lambda m=ours, i=inp: m(i), 20)
        print(f"reference {label}: torch.ao {t_ao * 1e3:7.3f} ms; rqt {t_rq * 1e3:7.3f} ms   "
              f"ratio {t_rq / t_ao:5.2f}x")


if __name__ == "__main__":
    main()
    qat_and_reference()
