"""torch.experimental APoT qparams against torch.ao's APoTObserver._calculate_qparams, run on the
installed torch (its float32 tensor arithmetic, cat promotion and sort).

torch.ao.quantization.experimental is not shipped in wheels, so the
observer's final upstream code is transcribed here, line for line, minus min/max bookkeeping.
"""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import refquant as rq  # noqa: E402
from tests.references import assert_bitwise_equal  # noqa: E402


def _torch_observer_qparams(x, b, k, signed):
    min_val, max_val = torch.aminmax(x)
    alpha = torch.max(-min_val, max_val)
    n = b // k
    p_all = []
    for i in range(n):
        p_curr = torch.tensor([0])
        for j in range((2**k - 2) + 1):
            curr_ele = 2 ** (-(i + j * n))
            p_curr = torch.cat((p_curr, torch.tensor([curr_ele])))
            if signed:
                p_curr = torch.cat((p_curr, torch.tensor([-curr_ele])))
        p_all.append(torch.sort(p_curr, descending=True)[0] if signed else p_curr)
    p_sum = 0.0
    for tens in p_all:
        p_sum += float(tens[0]) if signed else float(tens[1])
    gamma = alpha / p_sum
    sums = []
    for row in itertools.product(*p_all):
        total = 0.0
        for ele in row:
            total += ele
        sums.append(total)
    levels, indices = torch.tensor([float(gamma) * e for e in sums]).sort()
    return alpha, gamma, levels, indices


CASES = [(4, 2, False), (6, 2, False), (6, 3, False), (8, 2, False), (8, 4, False), (4, 1, False),
         (4, 2, True), (6, 3, True), (4, 1, True)]


@pytest.mark.parametrize("b,k,signed", CASES)
@pytest.mark.parametrize("alpha", [1.0, 1.7, 0.3, 100.23, 3e-3])
def test_qparams_match_torch_observer(b, k, signed, alpha):
    x = np.float32([0.0, -0.5 * alpha, alpha])
    ta, tg, tl, ti = _torch_observer_qparams(torch.tensor(x), b, k, signed)
    ra, rg, rl, ri = rq.apot.torch_experimental_qparams(x, bits=b, k=k, signed=signed)
    assert ra == ta.item() and rg == tg.item()
    assert_bitwise_equal(rl, tl.numpy(), "quantization_levels")
    unique = np.array([(rl == v).sum() == 1 for v in rl])
    # where a float32 level is unique its index is torch's; among duplicates torch's unstable
    # CPU sort decides the order (documented), so only the set of indices is compared there
    assert ri[unique].tolist() == ti.numpy()[unique].tolist()
    assert sorted(ri.tolist()) == sorted(ti.tolist())
