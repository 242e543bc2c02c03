"""NumPy fast paths of the recurrent sequence ops (``lstm_sequence``, ``gru_sequence``,
``rnn_sequence``; see ``dlx/ops/recurrent.py`` for what they compute) and of the
time-major input projection (``sequence_projection``).

Same math as the generic loops, arranged for a CPU: every step writes into
preallocated time-major buffers with ``out=`` arguments (no temporaries), and the
large buffers are reused from call to call (``buffer_pool``: fresh ones cost a
page fault per 4 KiB). The LSTM keeps the gates of a step in contiguous
``(B, u)`` blocks so that each operation covers several gates in one NumPy call.
BLAS is held to one thread inside the loops (threadpoolctl, when installed): the
products there are too small to gain from a second thread and can stall for
milliseconds waiting for one on a busy machine. The second core works on a
worker thread beside the loops of large layers instead: it prepares the LSTM's
gate-major inputs and gate-derivative factors ahead of the loops, sums the
recurrent-kernel gradient of finished steps during the reverse loops, and takes
half of the products of ``sequence_projection``. Each loop kernel handles
``tanh``/``sigmoid`` activations in float32/float64 and returns None otherwise,
so the generic loop runs.
"""

import numpy as np

from .blas_threads import OneBlasThread, blas_controllers, one_thread_if_small
from .buffer_pool import pooled
from .thread_pools import thread_pool

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _loop_blas(batch, units):
    """One BLAS thread for the per-step products of a loop when they are small
    (``batch * units^2`` up to 2^20 multiply-adds per gate), else leave BLAS alone."""
    return one_thread_if_small(batch * units * units, _SMALL_PRODUCT)


_SMALL_PRODUCT = 1 << 20


def _one_thread_loop(batch, units):
    """Whether ``_loop_blas`` holds BLAS to one thread (threadpoolctl present, small products)."""
    return bool(blas_controllers()) and batch * units * units <= _SMALL_PRODUCT


# the worker thread takes work only from calls of at least this many multiply-adds in
# all (a hand-over costs 10-20 us of the caller's time on an idle machine, more on a
# busy one; small layers run everything in line)
WORKER_MIN_WORK = 1 << 23


def _loop_worker(steps, batch, units, width):
    """The worker for a loop of ``steps`` ``(batch, units) @ (units, width)`` products, or
    None: only beside a loop that holds BLAS to one thread and is large enough."""
    if steps * batch * units * width < WORKER_MIN_WORK or not _one_thread_loop(batch, units):
        return None
    return _worker()


def _worker():
    """A one-thread executor for work that can run beside a recurrent loop (one thread, so
    what is submitted runs in order)."""
    return thread_pool("rnn", 1)


def _supported(spec, xproj, need_sigmoid=True):
    if xproj.dtype not in _FLOATS or not isinstance(xproj, np.ndarray):
        return False
    if spec.activation != "tanh":
        return False
    return spec.recurrent_activation == "sigmoid" or not need_sigmoid


def _step_masks(spec, dtype):
    """(keep (T, B, 1) bool, carry (T, B, 1) bool, keep as float) in processing order, or Nones."""
    if spec.mask is None:
        return None, None, None
    mask = np.asarray(spec.mask).T[:, :, None]
    if spec.go_backwards:
        mask = mask[::-1]
    mask = np.ascontiguousarray(mask)
    return mask, ~mask, mask.astype(dtype)


def _finish_dx(spec, dz):
    return dz[::-1] if spec.go_backwards else dz


class _Saved:
    __slots__ = ("H", "HD", "C", "A", "TC", "U", "keep", "carry", "keepf", "rm", "extra")


class LSTMSequence:
    """LSTM with the gates of each step in blocks of contiguous ``(B, u)`` arrays.

    Forward: ``A (T + 1, 5, B, u)`` holds per step the blocks ``o, i, f, g,
    c_prev`` (after activation; ``A[t + 1, 4]`` is ``c_t``). One ``tanh`` of the
    four gate blocks gives ``g`` and, as ``sigmoid(x) = (1 + tanh(x/2)) / 2``, the
    three sigmoid gates (contiguous, so one affine map finishes them; the 1/2
    folded into their columns of the inputs and of ``U`` once per call), and
    ``i*g + f*c_prev`` is one product of the adjacent pairs ``(i, f)`` and
    ``(g, c_prev)`` and one sum.

    Backward: the gate gradients of a step are written batch-major in Keras
    gate order, ``dZ (T, B, 4u)``, so one ``(B, 4u) @ (4u, u)`` product gives
    ``dh``, ``dZ`` is the gradient of ``xproj`` as it is, and the gradient of
    ``U`` is ``sum_t h_{t-1}^T dZ_t``, computed in chunks of steps on a worker
    thread while the loop goes on (the second core is otherwise idle). The
    gate-major inputs (forward) and the gate-derivative factors (backward) are
    prepared on the worker thread too, a few steps ahead of the loop.
    """

    def forward(self, spec, xproj, U, rbias, h0, c0):
        if not _supported(spec, xproj):
            return None
        with _loop_blas(xproj.shape[1], U.shape[0]):
            return self._forward(spec, xproj, U, h0, c0)

    def _forward(self, spec, xproj, U, h0, c0):
        T, B, G = xproj.shape
        u = G // 4
        dt = xproj.dtype
        source = xproj[::-1] if spec.go_backwards else xproj
        source = source.reshape(T, B, 4, u)
        # blocks o, i, f, g; sigmoid(x) = (1 + tanh(x / 2)) / 2 with the 1/2 folded into
        # the sigmoid gates' inputs and recurrent kernel once per call
        XP = pooled((T, 4, B, u), dt)

        def prepare(start, stop):
            xp, src = XP[start:stop], source[start:stop]
            np.copyto(xp[:, 1:], src[:, :, :3].transpose(0, 2, 1, 3))
            np.copyto(xp[:, 0], src[:, :, 3])
            xp[:, :3] *= 0.5

        ready = _prepare_ahead(_loop_worker(T, B, u, G), T, prepare, forward=True)
        U_gates = U.reshape(u, 4, u)
        U4 = np.empty((4, u, u), dt)
        np.copyto(U4[1:], U_gates[:, :3].transpose(1, 0, 2))
        np.copyto(U4[0], U_gates[:, 3])
        U4[:3] *= 0.5
        H = pooled((T + 1, B, u), dt)
        H[0] = h0
        A = pooled((T + 1, 5, B, u), dt)
        A[0, 4] = c0
        TC = pooled((T, B, u), dt)
        pair = np.empty((2, B, u), dt)
        keep, carry, keepf = _step_masks(spec, dt)
        rm = spec.recurrent_mask
        HD = pooled((T, B, u), dt) if rm is not None else None
        matmul, add, tanh, multiply = np.matmul, np.add, np.tanh, np.multiply
        for t in range(T):
            waiting = ready.get(t)
            if waiting is not None:
                waiting.result()
            a = A[t]
            hp = H[t]
            if rm is not None:
                multiply(hp, rm, out=HD[t])
                hp = HD[t]
            z = a[:4]
            matmul(hp, U4, out=z)
            z += XP[t]
            tanh(z, out=z)
            s = a[:3]  # o, i, f
            s *= 0.5
            s += 0.5
            multiply(a[1:3], a[3:5], out=pair)  # i*g, f*c_prev
            c = A[t + 1, 4]
            add(pair[0], pair[1], out=c)
            tanh(c, out=TC[t])
            multiply(a[0], TC[t], out=H[t + 1])
            if carry is not None:
                np.copyto(H[t + 1], H[t], where=carry[t])
                np.copyto(c, a[4], where=carry[t])
        saved = _Saved()
        saved.H, saved.HD, saved.A, saved.TC, saved.U = H, HD, A, TC, U
        saved.keep, saved.carry, saved.keepf, saved.rm = keep, carry, keepf, rm
        outputs = (H[T], A[T, 4])
        if spec.return_sequences:
            outputs = (H[1:],) + outputs
        return outputs, saved

    def backward(self, spec, s, d_seq, d_h, d_c, needs):
        with _loop_blas(s.H.shape[1], s.U.shape[0]):
            return self._backward(spec, s, d_seq, d_h, d_c, needs)

    def _backward(self, spec, s, d_seq, d_h, d_c, needs):
        A, TC, U = s.A, s.TC, s.U
        T = TC.shape[0]
        _, _, B, u = A.shape
        dt = A.dtype
        # Q: what multiplies (dh, dc, dc, dc) to give the gradients of (o, i, f, g)'s
        # pre-activations; OT = o * (1 - tanh(c)^2): dh -> dc. Prepared for chunks of
        # steps from the last one down, on the worker thread while the loop runs.
        Q = pooled((T, 4, B, u), dt)
        OT = pooled((T, B, u), dt)

        def prepare(start, stop):
            a, q, ot, tc = A[start:stop], Q[start:stop], OT[start:stop], TC[start:stop]
            np.subtract(1.0, a[:, :3], out=q[:, :3])
            q[:, :3] *= a[:, :3]  # sigmoid'(z) = y (1 - y)
            q[:, 0] *= tc
            q[:, 1] *= a[:, 3]
            q[:, 2] *= a[:, 4]
            np.multiply(a[:, 3], a[:, 3], out=q[:, 3])
            np.subtract(1.0, q[:, 3], out=q[:, 3])  # tanh'(z) = 1 - y^2
            q[:, 3] *= a[:, 1]
            np.multiply(tc, tc, out=ot)
            np.subtract(1.0, ot, out=ot)
            ot *= a[:, 0]

        worker = _loop_worker(T, B, u, 4 * u)
        ready = _prepare_ahead(worker, T, prepare)
        f = A[:T, 2]
        dZ = pooled((T, B, 4 * u), dt)  # Keras gate order i, f, c, o
        dZ4 = dZ.reshape(T, B, 4, u)
        UT = U.T
        dh = np.array(d_h, dtype=dt, copy=True)
        dc = np.array(d_c, dtype=dt, copy=True)
        gates = np.empty((4, B, u), dt)  # i, f, g, o gradients of one step
        gates_T = gates.transpose(1, 0, 2)
        tmp = np.empty((B, u), dt)
        keep_h = np.empty((B, u), dt) if s.keep is not None else None
        keep_c = np.empty((B, u), dt) if s.keep is not None else None
        Hp = s.HD if s.HD is not None else s.H[:-1]
        kernel_grad = _KernelGradient(Hp, dZ, needs[1], worker)
        wants_state = needs[3] or needs[4]
        matmul, multiply = np.matmul, np.multiply
        for t in range(T - 1, -1, -1):
            waiting = ready.get(t)
            if waiting is not None:
                waiting.result()
            if d_seq is not None:
                dh += d_seq[t]
            if keep_h is not None:
                m = s.keepf[t]
                np.multiply(dh, 1.0 - m, out=keep_h)
                np.multiply(dc, 1.0 - m, out=keep_c)
                dh *= m
                dc *= m
            multiply(dh, OT[t], out=tmp)
            dc += tmp
            q = Q[t]
            multiply(dh, q[0], out=gates[3])  # o
            multiply(q[1:], dc, out=gates[:3])  # i, f, g
            np.copyto(dZ4[t], gates_T)  # batch-major (one copy beats strided products)
            if t == 0 and not wants_state:  # the first layer's zero initial state
                kernel_grad.step_done(t)
                return _finish_dx(spec, dZ), kernel_grad.result(), None, None, None
            dc *= f[t]
            matmul(dZ[t], UT, out=dh)
            if s.rm is not None:
                dh *= s.rm
            if keep_h is not None:
                dh += keep_h
                dc += keep_c
            kernel_grad.step_done(t)
        dU = kernel_grad.result()
        return _finish_dx(spec, dZ), dU, None, dh, dc


def _prepare_ahead(worker, T, prepare, forward=False):
    """Run ``prepare(start, stop)`` over all steps in chunks, in the order a loop will
    read them (from the last step down unless ``forward``), on ``worker`` (else at
    once, here). Returns ``{t: future}``: the loop waits for the future at ``t``
    (its first step of a chunk) before it reads that chunk."""
    if worker is None:
        prepare(0, T)
        return {}
    ready = {}
    # two chunks (each hand-over to the worker costs the loop 10-20 us): a short
    # first one that the loop waits for, then the rest, ready long before it is read
    first = min(T, 3)
    for start, stop in ((0, first), (first, T)) if forward else ((T - first, T), (0, T - first)):
        if stop > start:
            ready[start if forward else stop - 1] = worker.submit(prepare, start, stop)
    return ready


class _KernelGradient:
    """``sum_t Hp[t]^T @ dZ[t]`` (``Hp (T, B, u)``, ``dZ (T, B, G)``) while a reverse
    loop fills ``dZ`` from the last step down: each chunk of steps is multiplied as
    soon as it is filled, on the worker thread when the loop holds BLAS to one
    thread (so the two threads use both cores), else in line."""

    def __init__(self, Hp, dZ, wanted, worker):
        self.Hp, self.dZ, self.wanted = Hp, dZ, wanted
        T, B, u = Hp.shape
        self.chunk = max(2, T // 2)  # halved for each next chunk: the last, short one
        # is all the loop waits for at its end, and hand-overs stay few (log2 T)
        self.end = T  # the chunk being filled is [t, end)
        self.total = np.zeros((u, dZ.shape[2]), dZ.dtype) if wanted else None
        self.partial = np.empty_like(self.total) if wanted else None
        self.worker = worker if wanted else None
        self.futures = []

    def step_done(self, t):
        """The loop has filled ``dZ[t]``."""
        if not self.wanted or (self.end - t < self.chunk and t > 0):
            return
        start, stop = t, self.end
        self.end = t
        self.chunk = max(2, t // 2)
        if self.worker is None:
            self._add(start, stop)
        else:
            self.futures.append(self.worker.submit(self._add, start, stop))

    def _add(self, start, stop):
        n, B, u = stop - start, self.Hp.shape[1], self.Hp.shape[2]
        hp = self.Hp[start:stop].reshape(n * B, u)
        np.matmul(hp.T, self.dZ[start:stop].reshape(n * B, -1), out=self.partial)
        self.total += self.partial

    def result(self):
        """The sum (None when not wanted), after every chunk is done."""
        for future in self.futures:
            future.result()
        return self.total


class GRUSequence:
    """GRU, both ``reset_after`` variants, with the blocks of a step contiguous.

    Forward: ``A (T, 4, B, u)`` holds per step ``z, r`` (after the sigmoid, one
    ``tanh`` for both as in the LSTM kernel), ``ih`` (``reset_after``: the
    recurrent part of the candidate, ``hd @ U_h + b_h``; else ``r * hd``) and
    the candidate ``hh``. Backward: ``DI (T, B, 3u)`` holds per step the
    gradient of what multiplies ``U`` (``reset_after``: ``dz, dr, r * dah``;
    else ``dz, dr`` and ``dah`` in the last block), so one product per step
    gives the recurrent part of ``dh``, and the recurrent-kernel gradient of
    finished steps is summed on the worker thread during the loop.
    """

    def forward(self, spec, xproj, U, rbias, h0, c0):
        if not _supported(spec, xproj):
            return None
        with _loop_blas(xproj.shape[1], U.shape[0]):
            return self._forward(spec, xproj, U, rbias, h0)

    def _forward(self, spec, xproj, U, rbias, h0):
        T, B, G = xproj.shape
        u = G // 3
        dt = xproj.dtype
        source = xproj[::-1] if spec.go_backwards else xproj
        source = source.reshape(T, B, 3, u)
        after = spec.reset_after
        # XP: z, r inputs (plus their recurrent bias) times 1/2 for the tanh form of the
        # sigmoid, then the candidate's input
        XP = pooled((T, 3, B, u), dt)
        np.copyto(XP, source.transpose(0, 2, 1, 3))
        U3 = np.empty((3, u, u), dt)
        np.copyto(U3, U.reshape(u, 3, u).transpose(1, 0, 2))
        rb_h = None
        if rbias is not None:
            rb = rbias.reshape(3, 1, u)
            XP[:, :2] += rb[:2]
            rb_h = rb[2]
        XP[:, :2] *= 0.5
        U3[:2] *= 0.5
        H = pooled((T + 1, B, u), dt)
        H[0] = h0
        A = pooled((T, 4, B, u), dt)
        keep, carry, keepf = _step_masks(spec, dt)
        rm = spec.recurrent_mask
        HD = pooled((T, B, u), dt) if rm is not None else None
        U_zr, U_h = U3[:2], U3[2]
        matmul, tanh, multiply, subtract = np.matmul, np.tanh, np.multiply, np.subtract
        for t in range(T):
            a = A[t]
            hp = H[t]
            if rm is not None:
                multiply(hp, rm, out=HD[t])
                hp = HD[t]
            zr, ih, hh = a[:2], a[2], a[3]
            if after:
                matmul(hp, U3, out=a[:3])
                if rb_h is not None:
                    ih += rb_h
            else:
                matmul(hp, U_zr, out=zr)
            zr += XP[t, :2]
            tanh(zr, out=zr)
            zr *= 0.5
            zr += 0.5
            if after:
                multiply(a[1], ih, out=hh)
            else:
                multiply(a[1], hp, out=ih)
                matmul(ih, U_h, out=hh)
            hh += XP[t, 2]
            tanh(hh, out=hh)
            h = H[t + 1]  # hh + z * (h_prev - hh)
            subtract(H[t], hh, out=h)
            h *= a[0]
            h += hh
            if carry is not None:
                np.copyto(h, H[t], where=carry[t])
        s = _Saved()
        s.H, s.HD, s.A, s.U = H, HD, A, U
        s.keep, s.carry, s.keepf, s.rm = keep, carry, keepf, rm
        outputs = (H[T],)
        if spec.return_sequences:
            outputs = (H[1:],) + outputs
        return outputs, s

    def backward(self, spec, s, d_seq, d_h, d_c, needs):
        with _loop_blas(s.H.shape[1], s.U.shape[0]):
            return self._backward(spec, s, d_seq, d_h, d_c, needs)

    def _backward(self, spec, s, d_seq, d_h, d_c, needs):
        A, H, U = s.A, s.H, s.U
        T, _, B, u = A.shape
        dt = A.dtype
        after = spec.reset_after
        z, r, ih, hh = A[:, 0], A[:, 1], A[:, 2], A[:, 3]
        Hp = s.HD if s.HD is not None else H[:-1]
        # for all steps: FZ = (h_prev - hh) z (1 - z), FH = (1 - z)(1 - hh^2),
        # FR = r (1 - r) times what r multiplies (ih; hd without reset_after)
        F = pooled((T, 3, B, u), dt)
        FZ, FH, FR = F[:, 0], F[:, 1], F[:, 2]
        np.subtract(H[:-1], hh, out=FZ)
        FZ *= z
        np.subtract(1.0, z, out=FH)
        FZ *= FH
        np.multiply(hh, hh, out=FR)
        np.subtract(1.0, FR, out=FR)
        FH *= FR
        np.subtract(1.0, r, out=FR)
        FR *= r
        FR *= ih if after else Hp
        DI = pooled((T, B, 3 * u), dt)  # what multiplies U: see the class docstring
        DI3 = DI.reshape(T, B, 3, u)
        DAH = pooled((T, B, u), dt) if after else None
        dh = np.array(d_h, dtype=dt, copy=True)
        keep_h = np.empty((B, u), dt) if s.keep is not None else None
        tmp = np.empty((B, u), dt)
        drh = np.empty((B, u), dt)
        UT, UzrT, UhT = U.T, U[:, : 2 * u].T, U[:, 2 * u :].T
        worker = _loop_worker(T, B, u, 3 * u)
        if after:
            grads = [_KernelGradient(Hp, DI, needs[1], worker)]
        else:
            grads = [
                _KernelGradient(Hp, DI[:, :, : 2 * u], needs[1], worker),
                _KernelGradient(ih, DI[:, :, 2 * u :], needs[1], worker),
            ]
        matmul, multiply = np.matmul, np.multiply
        for t in range(T - 1, -1, -1):
            if d_seq is not None:
                dh += d_seq[t]
            if keep_h is not None:
                m = s.keepf[t]
                multiply(dh, 1.0 - m, out=keep_h)
                dh *= m
            di = DI3[t]
            multiply(dh, FZ[t], out=di[:, 0])
            if after:
                dah = DAH[t]
                multiply(dh, FH[t], out=dah)
                multiply(dah, FR[t], out=di[:, 1])
                multiply(dah, r[t], out=di[:, 2])
                matmul(DI[t], UT, out=tmp)
            else:
                dah = di[:, 2]
                multiply(dh, FH[t], out=dah)
                matmul(dah, UhT, out=drh)
                multiply(drh, FR[t], out=di[:, 1])
                matmul(DI[t, :, : 2 * u], UzrT, out=tmp)
                drh *= r[t]
                tmp += drh
            if s.rm is not None:
                tmp *= s.rm
            dh *= z[t]
            dh += tmp
            if keep_h is not None:
                dh += keep_h
            for grad in grads:
                grad.step_done(t)
        dU = drb = None
        if needs[1]:
            parts = [grad.result() for grad in grads]
            dU = parts[0] if after else np.concatenate(parts, axis=1)
        if after:  # the xproj gradient: dz, dr, dah
            dX = pooled((T, B, 3 * u), dt)
            dX3 = dX.reshape(T, B, 3, u)
            np.copyto(dX3[:, :, :2], DI3[:, :, :2])
            np.copyto(dX3[:, :, 2], DAH)
            if needs[2]:
                drb = np.add.reduce(DI.reshape(T * B, 3 * u), axis=0)
        else:
            dX = DI
        return _finish_dx(spec, dX), dU, drb, dh, None


class RNNSequence:
    """SimpleRNN with ``tanh``: three NumPy calls per forward step, the recurrent-kernel
    gradient summed on the worker thread during the reverse loop."""

    def forward(self, spec, xproj, U, rbias, h0, c0):
        with _loop_blas(xproj.shape[1], U.shape[0]):
            return self._forward(spec, xproj, U, rbias, h0, c0)

    def _forward(self, spec, xproj, U, rbias, h0, c0):
        if not _supported(spec, xproj, need_sigmoid=False):
            return None
        T, B, u = xproj.shape
        dt = xproj.dtype
        XP = xproj[::-1] if spec.go_backwards else xproj
        H = pooled((T + 1, B, u), dt)
        H[0] = h0
        keep, carry, keepf = _step_masks(spec, dt)
        rm = spec.recurrent_mask
        HD = pooled((T, B, u), dt) if rm is not None else None
        # tanh outputs before masking: the states themselves when nothing is masked
        A = H[1:] if carry is None else pooled((T, B, u), dt)
        for t in range(T):
            hp = H[t]
            if rm is not None:
                np.multiply(hp, rm, out=HD[t])
                hp = HD[t]
            a = A[t]
            np.matmul(hp, U, out=a)
            a += XP[t]
            np.tanh(a, out=a)
            if carry is not None:
                np.copyto(H[t + 1], a)
                np.copyto(H[t + 1], H[t], where=carry[t])
        s = _Saved()
        s.H, s.HD, s.A, s.U = H, HD, A, U
        s.keep, s.carry, s.keepf, s.rm = keep, carry, keepf, rm
        outputs = (H[T],)
        if spec.return_sequences:
            outputs = (H[1:],) + outputs
        return outputs, s

    def backward(self, spec, s, d_seq, d_h, d_c, needs):
        with _loop_blas(s.H.shape[1], s.U.shape[0]):
            return self._backward(spec, s, d_seq, d_h, d_c, needs)

    def _backward(self, spec, s, d_seq, d_h, d_c, needs):
        A, U = s.A, s.U
        T, B, u = A.shape
        dt = A.dtype
        F = np.multiply(A, A, out=pooled(A.shape, dt))
        np.subtract(1.0, F, out=F)
        dA = pooled((T, B, u), dt)
        dh = np.array(d_h, dtype=dt, copy=True)
        keep_h = pooled((B, u), dt) if s.keep is not None else None
        UT = U.T
        Hp = s.HD if s.HD is not None else s.H[:-1]
        kernel_grad = _KernelGradient(Hp, dA, needs[1], _loop_worker(T, B, u, u))
        for t in range(T - 1, -1, -1):
            if d_seq is not None:
                dh += d_seq[t]
            if keep_h is not None:
                m = s.keepf[t]
                np.multiply(dh, 1.0 - m, out=keep_h)
                dh *= m
            np.multiply(dh, F[t], out=dA[t])
            np.matmul(dA[t], UT, out=dh)
            if s.rm is not None:
                dh *= s.rm
            if keep_h is not None:
                dh += keep_h
            kernel_grad.step_done(t)
        return _finish_dx(spec, dA), kernel_grad.result(), None, dh, None


class SequenceProjection:
    """``sequence_projection``: time-major ``x @ kernel + bias`` into a pooled buffer.

    The time-major copy of the input is free for a stacked recurrent layer (its
    input is the previous layer's time-major output seen batch-major) and small
    for the first layer (``features`` columns). With threadpoolctl the products
    are split between this thread and the worker thread, BLAS held to one thread
    in each: as fast as BLAS's own two threads on an idle machine, and far
    steadier on a busy one (BLAS threads spin-wait for each other).
    """

    split = True  # False: one product on BLAS's own threads

    def _split(self, multiply_adds):
        return self.split and multiply_adds >= WORKER_MIN_WORK and bool(blas_controllers())

    def forward(self, x, kernel, bias):
        B, T, F = x.shape
        G = kernel.shape[1]
        xt = x.transpose(1, 0, 2)
        if not xt.flags.c_contiguous:
            xt = _copy(xt)
        x2 = xt.reshape(T * B, F)
        y = pooled((T, B, G), x.dtype)
        y2 = y.reshape(T * B, G)
        if self._split(T * B * F * G):
            half = (T * B) // 2
            with OneBlasThread():
                other = _worker().submit(_affine, x2[half:], kernel, bias, y2[half:])
                _affine(x2[:half], kernel, bias, y2[:half])
                other.result()
        else:
            _affine(x2, kernel, bias, y2)
        return y, (x2, kernel, (B, T, F))

    def backward(self, saved, g, needs):
        x2, kernel, (B, T, F) = saved
        G = kernel.shape[1]
        g2 = np.ascontiguousarray(g).reshape(T * B, G)
        dx = dk = db = None
        if self._split(T * B * F * G):
            with OneBlasThread():
                if needs[1] and needs[0]:
                    dk_future = _worker().submit(np.matmul, x2.T, g2)
                elif needs[1]:
                    half = (T * B) // 2
                    dk_future = _worker().submit(np.matmul, x2[half:].T, g2[half:])
                    dk = x2[:half].T @ g2[:half]
                if needs[0]:
                    dx = pooled((T, B, F), g2.dtype)
                    np.matmul(g2, kernel.T, out=dx.reshape(T * B, F))
                    dx = dx.transpose(1, 0, 2)
                if needs[2]:
                    db = np.add.reduce(g2, axis=0)
                if needs[1]:
                    dk = dk_future.result() if dk is None else dk + dk_future.result()
            return dx, dk, db
        if needs[0]:
            dx = pooled((T, B, F), g2.dtype)
            np.matmul(g2, kernel.T, out=dx.reshape(T * B, F))
            dx = dx.transpose(1, 0, 2)
        if needs[1]:
            dk = x2.T @ g2
        if needs[2]:
            db = np.add.reduce(g2, axis=0)
        return dx, dk, db


def _affine(x, kernel, bias, out):
    np.matmul(x, kernel, out=out)
    if bias is not None:
        out += bias


def _copy(a):
    out = pooled(a.shape, a.dtype)
    np.copyto(out, a)
    return out


RNN_KERNELS = {
    "sequence_projection": SequenceProjection(),
    "lstm_sequence": LSTMSequence(),
    "gru_sequence": GRUSequence(),
    "rnn_sequence": RNNSequence(),
}
