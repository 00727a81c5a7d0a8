"""``FakeQuantize`` (a drop-in for torch.ao's) and ``LearnableFakeQuantize`` (LSQ)."""

from __future__ import annotations

import itertools
import weakref

import torch
from torch.ao.quantization import FakeQuantizeBase, MovingAverageMinMaxObserver

from .._torchao import register_fake_quantize
from ..functional import fake_quantize

_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric,
                torch.per_channel_affine_float_qparams)
_SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)


_OBSERVERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_KEYS = itertools.count()


@torch.library.custom_op("refquant::observe", mutates_args=("state",))
def _observe_op(x: torch.Tensor, state: list[torch.Tensor], key: str, scale_like: torch.Tensor,
                zero_point_like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One observer step as an opaque node for torch.compile / torch.export: the observer
    registered under ``key`` takes its buffers from ``state``, sees ``x``, writes its buffers
    back into ``state`` and returns ``calculate_qparams()`` in the dtype and shape of
    ``scale_like`` / ``zero_point_like``."""
    observer = _OBSERVERS.get(key)
    if observer is None:
        raise RuntimeError(f"no observer registered under {key!r}: a graph with the observer on "
                           "runs only in the process that built the module")
    buffers = list(observer.buffers())
    with torch.no_grad():
        for buf, value in zip(buffers, state, strict=True):
            if buf is not value:
                buf.copy_(value)
        _observe_into(observer, x)
        scale, zero_point = observer.calculate_qparams()
        for buf, value in zip(buffers, state, strict=True):
            if buf is not value:
                value.copy_(buf)
    if scale.numel() != scale_like.numel():
        raise RuntimeError(f"the observer gave {scale.numel()} scales where the module holds "
                           f"{scale_like.numel()}: run one batch eagerly before compiling")
    return (scale.to(scale_like).reshape(scale_like.shape).clone(),
            zero_point.to(zero_point_like).reshape(zero_point_like.shape).clone())


@_observe_op.register_fake
def _(x, state, key, scale_like, zero_point_like):
    return torch.empty_like(scale_like), torch.empty_like(zero_point_like)


def _unseen(observer) -> bool:
    """Whether a per-channel ``observer`` is sized but has seen nothing: ``min_val`` all +inf and
    ``max_val`` all -inf (a state no batch leaves behind; see
    :meth:`_ObservedFakeQuantize.size_channels`)."""
    mn, mx = observer.min_val, observer.max_val
    return (mn.dim() == 1 and mn.numel() > 0 and bool(torch.isposinf(mn).all())
            and bool(torch.isneginf(mx).all()))


def _observe_into(observer, x) -> None:
    """``observer(x)``; a per-channel observer that is sized but unseen sees ``x`` from the empty
    buffers torch's per-channel observers start from (their first-batch path), and the result is
    copied into its sized buffers."""
    if not _unseen(observer):
        observer(x)
        return
    kept = observer.min_val, observer.max_val
    observer.min_val, observer.max_val = kept[0].new_empty(0), kept[1].new_empty(0)
    try:
        observer(x)
        kept[0].resize_(observer.min_val.shape).copy_(observer.min_val)
        kept[1].resize_(observer.max_val.shape).copy_(observer.max_val)
    finally:
        observer.min_val, observer.max_val = kept


class _ObservedFakeQuantize(FakeQuantizeBase):
    """Observer plumbing shared by both fake quantizers (attributes torch.ao and PT2E read).

    Toggles: in eager mode ``forward`` reads the ``*_enabled`` buffers, as torch's modules do.
    Under ``torch.compile`` / ``torch.export`` it reads Python mirrors of them (``_on``), which
    the toggle methods and ``load_state_dict`` keep equal to the buffers; a compiled module
    recompiles when one changes. The observer step runs as one opaque op
    (``torch.ops.refquant.observe``)."""

    def _init_observer(self, observer, quant_min, quant_max, is_dynamic, observer_kwargs):
        register_fake_quantize(type(self))  # torchao's PT2E flow checks its own base class
        if quant_min is not None and quant_max is not None and quant_min > quant_max:
            raise ValueError(f"quant_min must be <= quant_max; got {quant_min}, {quant_max}")
        if quant_min is not None:
            observer_kwargs["quant_min"] = quant_min
        if quant_max is not None:
            observer_kwargs["quant_max"] = quant_max
        observer_kwargs["is_dynamic"] = is_dynamic
        self.activation_post_process = observer(**observer_kwargs)
        app = self.activation_post_process
        self.quant_min, self.quant_max = app.quant_min, app.quant_max
        self.is_dynamic = app.is_dynamic
        self.dtype = app.dtype
        self.qscheme = app.qscheme
        self.ch_axis = getattr(app, "ch_axis", -1)
        self.is_per_channel = self.qscheme in _PER_CHANNEL
        self._register_observer()

    def _register_observer(self) -> None:
        app = self.activation_post_process
        self._observer_key = f"{type(app).__qualname__}-{next(_KEYS)}"
        _OBSERVERS[self._observer_key] = app

    def __setstate__(self, state):  # a copy (deepcopy, pickle) registers its own observer
        super().__setstate__(state)
        self._register_observer()

    def _sync_toggles(self) -> None:
        self._on = {name: bool(buf[0]) for name, buf in self.named_buffers(recurse=False)
                    if name.endswith("_enabled")}
        self._read = {}

    def _set_toggle(self, name: str, enabled: bool) -> None:
        getattr(self, name)[0] = 1 if enabled else 0
        self._on[name] = bool(enabled)

    def _enabled(self, name: str) -> bool:
        """The toggle ``name``: its Python mirror under compile; in eager mode the buffer's value,
        read again only when the buffer was written since the last read (its version counter)."""
        if torch.compiler.is_compiling():
            return self._on[name]
        buf = getattr(self, name)
        stamp = (id(buf), buf._version)
        if self._read.get(name) != stamp:
            self._on[name] = bool(buf[0] == 1)
            self._read[name] = stamp
        return self._on[name]

    def enable_fake_quant(self, enabled: bool = True) -> None:
        """Fake quant on (off: forward returns x unchanged)."""
        self._set_toggle("fake_quant_enabled", enabled)

    def _observe(self, X):
        """The observer sees ``X``; returns its ``calculate_qparams()`` (on the module's
        device)."""
        app = self.activation_post_process
        if torch.compiler.is_compiling():
            if any(buf.numel() == 0 for buf in app.buffers()):
                raise RuntimeError(f"{type(app).__name__} sizes its buffers on its first batch: "
                                   "run one batch eagerly before torch.compile / torch.export")
            return torch.ops.refquant.observe(X.detach(), list(app.buffers()), self._observer_key,
                                              self.scale, self.zero_point)
        _observe_into(app, X.detach())
        scale, zero_point = app.calculate_qparams()
        return scale.to(self.scale.device), zero_point.to(self.zero_point.device)

    def size_channels(self, channels: int) -> None:
        """Size a per-channel quantizer for ``channels`` channels before its first batch, so that
        ``torch.compile(fullgraph=True)`` and ``torch.export`` take it without an eager batch:
        ``scale`` / ``zero_point`` get ``channels`` entries (their current first value) and the
        observer's ``min_val`` / ``max_val`` +inf / -inf, read as "nothing seen" (its first batch
        takes torch's first-batch path, so the statistics are the same). A per-tensor quantizer,
        or an observer that has seen data, is left as it is.

        >>> import torch, refquant_torch as rqt
        >>> fq = rqt.nn.FakeQuantize(observer=torch.ao.quantization.PerChannelMinMaxObserver,
        ...                          quant_min=-128, quant_max=127, dtype=torch.qint8,
        ...                          qscheme=torch.per_channel_symmetric)
        >>> fq.size_channels(3); fq.scale.shape, fq.activation_post_process.min_val.tolist()
        (torch.Size([3]), [inf, inf, inf])
        """
        channels = int(channels)
        if channels < 1:
            raise ValueError(f"channels must be positive; got {channels}")
        app = self.activation_post_process
        if not self.is_per_channel or (app.min_val.numel() and not _unseen(app)):
            return
        with torch.no_grad():
            app.min_val.resize_(channels).fill_(float("inf"))
            app.max_val.resize_(channels).fill_(float("-inf"))
            for name in ("scale", "zero_point"):
                param = getattr(self, name)
                if param.numel() != channels:
                    param.data = param.detach().reshape(-1)[:1].repeat(channels)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for name in ("scale", "zero_point"):
            key = prefix + name
            if key in state_dict and name in self._buffers:
                getattr(self, name).resize_(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._sync_toggles()

    @torch.jit.export
    def calculate_qparams(self):
        return self.activation_post_process.calculate_qparams()

    def _axis(self):
        return self.ch_axis if self.is_per_channel else None


class FakeQuantize(_ObservedFakeQuantize):
    """torch.ao's ``FakeQuantize`` with refquant's numerics.

    ``FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=None, quant_max=None,
    is_dynamic=False, convention="torch.fake_quantize", **observer_kwargs)``. When the observer is
    enabled, it sees ``x`` and its ``calculate_qparams()`` replaces the ``scale`` / ``zero_point``
    buffers; when fake quant is enabled the output is ``rqt.fake_quantize(x, scale, zero_point,
    qmin=quant_min, qmax=quant_max, axis=ch_axis if per-channel, convention=convention)``, else
    ``x``. With the default convention the output equals torch's ``FakeQuantize`` bit for bit.
    Usable in a torch.ao ``QConfig`` (``FakeQuantize.with_args(...)``) and as
    ``observer_or_fake_quant_ctr`` of a PT2E ``QuantizationSpec``.

    >>> import torch, refquant_torch as rqt
    >>> fq = rqt.nn.FakeQuantize(quant_min=0, quant_max=255)
    >>> x = torch.tensor([-1.0, 0.3, 2.0])
    >>> torch.equal(fq(x), torch.ao.quantization.FakeQuantize(quant_min=0, quant_max=255)(x))
    True
    """

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self, observer=MovingAverageMinMaxObserver, quant_min=None, quant_max=None,
                 is_dynamic=False, convention="torch.fake_quantize", **observer_kwargs):
        super().__init__()
        self._init_observer(observer, quant_min, quant_max, is_dynamic, observer_kwargs)
        self.convention = convention
        self.register_buffer("scale", torch.tensor([1.0], dtype=torch.float))
        # torch's rule: float zero points for per_channel_affine_float_qparams
        zp_dtype = torch.float if self.qscheme == torch.per_channel_affine_float_qparams else torch.int
        self.register_buffer("zero_point", torch.tensor([0], dtype=zp_dtype))
        self._sync_toggles()

    def enable_observer(self, enabled: bool = True) -> None:
        """Observer on: it sees x and its qparams replace ``scale`` / ``zero_point``."""
        self._set_toggle("observer_enabled", enabled)

    def forward(self, X):
        if self._enabled("observer_enabled"):
            _scale, _zero_point = self._observe(X)
            if self.scale.shape != _scale.shape:
                self.scale.resize_(_scale.shape)
                self.zero_point.resize_(_zero_point.shape)
            self.scale.copy_(_scale)
            self.zero_point.copy_(_zero_point)
        if self._enabled("fake_quant_enabled"):
            X = fake_quantize(X, self.scale, self.zero_point, qmin=self.quant_min,
                              qmax=self.quant_max, axis=self._axis(), convention=self.convention)
        return X

    @torch.jit.export
    def extra_repr(self):
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, observer_enabled={self.observer_enabled}, "
            f"quant_min={self.quant_min}, quant_max={self.quant_max}, dtype={self.dtype}, "
            f"qscheme={self.qscheme}, ch_axis={self.ch_axis}, convention={self.convention!r}"
        )


class LearnableFakeQuantize(_ObservedFakeQuantize):
    """LSQ (arXiv:1902.08153): fake quant with a learnable ``scale`` and ``zero_point``, a drop-in
    for torch's ``_LearnableFakeQuantize`` (same constructor, buffers and toggles).

    ``LearnableFakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
    scale=1.0, zero_point=0.0, channel_len=-1, use_grad_scaling=False,
    convention="torch.fake_quantize", lsq_convention="lsq", **observer_kwargs)``.

    Forward, as torch's: while ``static_enabled`` the observer sees ``x`` and its qparams
    overwrite ``scale`` / ``zero_point``, otherwise ``scale`` is clamped to ``eps``; with fake
    quant enabled (symmetric schemes zero the zero point first) the output is
    ``rqt.fake_quantize(x, scale, zero_point, round_zero_point=True, ...)``: the zero point used is
    ``clamp(round_half_even(zero_point), quant_min, quant_max)``, an integer. Backward:
    ``rq.lsq.fake_quantize_grad(convention=lsq_convention)`` with ``grad_factor =
    1 / sqrt(x.numel() * quant_max)`` when ``use_grad_scaling``, else 1;
    ``lsq_convention="torch.learnable"`` gives torch's per-element gradients bit for bit (their
    sums are float64 in the core, float32 in torch).

    >>> import torch, refquant_torch as rqt
    >>> fq = rqt.nn.LearnableFakeQuantize(quant_min=0, quant_max=15, scale=0.25, zero_point=2.0)
    >>> fq = fq.enable_param_learning()
    >>> x = torch.tensor([0.1, 0.6, 9.0], requires_grad=True)
    >>> y = fq(x); y.tolist()
    [0.0, 0.5, 3.25]
    >>> y.sum().backward(); x.grad.tolist(), fq.scale.grad is not None
    ([1.0, 1.0, 0.0], True)
    """

    def __init__(self, observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                 scale=1.0, zero_point=0.0, channel_len=-1, use_grad_scaling=False,
                 convention="torch.fake_quantize", lsq_convention="lsq", **observer_kwargs):
        super().__init__()
        self._init_observer(observer, quant_min, quant_max, False, observer_kwargs)
        n = 1 if channel_len == -1 else int(channel_len)
        if n < 1:
            raise ValueError(f"channel_len must be -1 or positive; got {channel_len}")
        self.scale = torch.nn.Parameter(torch.full((n,), float(scale)))
        self.zero_point = torch.nn.Parameter(torch.full((n,), float(zero_point)))
        self.use_grad_scaling = bool(use_grad_scaling)
        self.convention = convention
        self.lsq_convention = lsq_convention
        self.register_buffer("static_enabled", torch.tensor([1], dtype=torch.uint8))
        self.register_buffer("learning_enabled", torch.tensor([0], dtype=torch.uint8))
        self.register_buffer("eps", torch.tensor([torch.finfo(torch.float32).eps]))
        self.bitwidth = int(self.quant_max - self.quant_min + 1).bit_length() - 1
        if channel_len != -1:
            self.size_channels(n)
        self._sync_toggles()

    def toggle_observer_update(self, enabled=True):
        """Set ``static_enabled`` (the observer sees x and its qparams overwrite ``scale`` /
        ``zero_point`` in forward); returns self (torch's name)."""
        self._set_toggle("static_enabled", enabled)
        return self

    def enable_observer(self, enabled=True):
        """:meth:`toggle_observer_update` under FakeQuantizeBase's name; returns None, as torch's."""
        self.toggle_observer_update(enabled)

    def toggle_qparam_learning(self, enabled=True):
        """Set ``learning_enabled`` and ``requires_grad`` of ``scale`` and ``zero_point``;
        returns self (torch's name)."""
        self._set_toggle("learning_enabled", enabled)
        self.scale.requires_grad = enabled
        self.zero_point.requires_grad = enabled
        return self

    def toggle_fake_quant(self, enabled=True):
        """Set ``fake_quant_enabled`` (off: forward returns x unchanged); returns self (torch's
        name)."""
        self._set_toggle("fake_quant_enabled", enabled)
        return self

    def enable_param_learning(self):
        """Observer off, fake quant on, qparams learned (torch's name)."""
        return self.toggle_qparam_learning(True).toggle_fake_quant(True).toggle_observer_update(False)

    def enable_static_estimate(self):
        """Observer on, fake quant on, qparams not learned (torch's name)."""
        return self.toggle_qparam_learning(False).toggle_fake_quant(True).toggle_observer_update(True)

    def enable_static_observation(self):
        """Observer on, fake quant off, qparams not learned (torch's name)."""
        return self.toggle_qparam_learning(False).toggle_fake_quant(False).toggle_observer_update(True)

    def forward(self, X):
        with torch.no_grad():
            if self._enabled("static_enabled"):
                _scale, _zero_point = self._observe(X)
                if self.scale.shape != _scale.shape:  # channel_len=-1 per channel: first batch
                    self.scale.data = self.scale.new_empty(_scale.shape)
                    self.zero_point.data = self.zero_point.new_empty(_scale.shape)
                self.scale.copy_(_scale)
                self.zero_point.copy_(_zero_point)
            else:
                self.scale.clamp_(min=self.eps)
        if not self._enabled("fake_quant_enabled"):
            return X
        if self.qscheme in _SYMMETRIC:
            with torch.no_grad():
                self.zero_point.zero_()
        grad_factor = 1.0
        if self.use_grad_scaling:
            grad_factor = 1.0 / (X.numel() * self.quant_max) ** 0.5
        axis = self._axis()
        scale = self.scale if axis is not None else self.scale.reshape(())
        zp = self.zero_point if axis is not None else self.zero_point.reshape(())
        return fake_quantize(X, scale, zp, qmin=self.quant_min, qmax=self.quant_max, axis=axis,
                             convention=self.convention, grad_factor=grad_factor,
                             lsq_convention=self.lsq_convention, round_zero_point=True)

    @torch.jit.export
    def calculate_qparams(self):
        """``(scale, zero_point)`` as torch's: ``scale`` clamped in place to ``eps`` and returned
        detached, ``zero_point = clamp(round_half_even(zero_point), quant_min, quant_max)`` as
        int64."""
        self.scale.data.clamp_(min=self.eps.item())
        scale = self.scale.detach()
        zp = self.zero_point.detach().round().clamp(self.quant_min, self.quant_max).long()
        return scale, zp
