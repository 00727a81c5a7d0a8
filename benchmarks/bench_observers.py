"""Observer speed against torch.ao in one run; prints ratios (refquant time / torch time).

    python benchmarks/bench_observers.py

* Histogram: update + qparams on 10**6 float32 normals, vs torch.ao HistogramObserver
  (target: ratio <= 1).
* MinMax per channel: update + qparams on a 4096x4096 float32 weight, vs torch.ao
  PerChannelMinMaxObserver (target: ratio <= 0.5), channels on axis 0 (rows) and on axis 1
  (columns; refquant reads them in place, torch permutes and copies).
Each figure is the best of several repetitions after a warm-up call (Numba compiled).
"""

import warnings

import numpy as np
import torch
from _common import best
from torch.ao.quantization import HistogramObserver, PerChannelMinMaxObserver

import refquant as rq


def histogram(reps=5):
    x = np.random.default_rng(0).standard_normal(10**6).astype(np.float32)
    xt = torch.from_numpy(x.copy())

    def ours():
        return rq.observers.Histogram(fmt=rq.uint8).update(x).qparams()

    def theirs():
        o = HistogramObserver()
        o(xt)
        return o.calculate_qparams()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s, z = ours()
        ts, tz = theirs()
        assert np.float32(s).view(np.uint32) == ts.numpy().view(np.uint32)[0] and z == tz[0]
        return best(ours, reps), best(theirs, reps)


def per_channel(reps=5, axis=0):
    w = np.random.default_rng(1).standard_normal((4096, 4096)).astype(np.float32)
    wt = torch.from_numpy(w.copy())

    def ours():
        return rq.observers.MinMax(fmt=rq.int8, symmetric=True, axis=axis).update(w).qparams()

    def theirs():
        o = PerChannelMinMaxObserver(ch_axis=axis, dtype=torch.qint8,
                                     qscheme=torch.per_channel_symmetric)
        o(wt)
        return o.calculate_qparams()

    s, _ = ours()
    ts, _ = theirs()
    assert (s.view(np.uint32) == ts.numpy().view(np.uint32)).all()
    return best(ours, reps), best(theirs, reps)


def main():
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name, fn, target in (("Histogram update+qparams, 1e6 float32", histogram, 1.0),
                             ("MinMax per-channel, 4096x4096, axis 0", per_channel, 0.5),
                             ("MinMax per-channel, 4096x4096, axis 1",
                              lambda: per_channel(axis=1), 0.5)):
        ours, theirs = fn()
        ratio = ours / theirs
        print(f"{name}: refquant {ours * 1e3:.2f} ms, torch {theirs * 1e3:.2f} ms, "
              f"ratio {ratio:.3f} (target <= {target}) {'OK' if ratio <= target else 'MISSED'}")


if __name__ == "__main__":
    main()
