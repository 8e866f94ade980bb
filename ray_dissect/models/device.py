"""Moving batches to the model's device and activations back, without stalling it.

:class:`Device` hides the one difference between CPU and CUDA that the extraction pipeline
cares about. On CUDA, host buffers are pinned, uploads are ``non_blocking`` on the current
stream, and downloads run on a side stream that first waits for the forward (so the copy of
batch b overlaps the forward of b + 1), with ``record_stream`` so the allocator does not reuse
an output before its copy is done; events say when a buffer may be reused. On CPU (or when
CUDA is not available) every step is a plain synchronous copy and the events are ``None``.

:class:`StepClock` times steps the same way on both: ``perf_counter`` on CPU, CUDA events on
the stream that runs the step on GPU (read only once the shard's work is complete, so timing
never synchronises the device early).

:func:`decode_on_device` decodes a batch of JPEGs on the device (nvJPEG on CUDA; the
``resources.gpu_decode`` option).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ray_dissect.models.crop import crop_box
from ray_dissect.spec import PreprocessSpec


class StepClock:
    """Seconds spent per named step, summed over the steps of one shard."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self._seconds: dict[str, float] = {}
        self._events: list[tuple[str, Any, Any]] = []

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        """Time the enclosed work as ``step`` (on CUDA: the work the current stream runs)."""
        if not self.cuda:
            t0 = time.perf_counter()
            yield
            self._seconds[step] = self._seconds.get(step, 0.0) + time.perf_counter() - t0
            return
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self._events.append((step, start, end))

    def totals(self) -> dict[str, float]:
        """Seconds per step (waits for the timed CUDA work to finish)."""
        out = dict(self._seconds)
        for step, start, end in self._events:
            end.synchronize()
            out[step] = out.get(step, 0.0) + start.elapsed_time(end) / 1000.0
        return out


class Device:
    """The model's device as the pipeline uses it.

    Args:
        name: a torch device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``); a CUDA name on a
            machine without CUDA behaves as the CPU.
    """

    def __init__(self, name: str) -> None:
        import torch

        self.name = name
        self.cuda = torch.device(name).type == "cuda" and torch.cuda.is_available()
        self._side = torch.cuda.Stream(device=name) if self.cuda else None

    def bind(self) -> None:
        """Make this device the calling thread's current CUDA device (streams and events are
        per device; a bare ``"cuda"`` is the current one already)."""
        import torch

        if self.cuda and torch.device(self.name).index is not None:
            torch.cuda.set_device(torch.device(self.name))

    def host_empty(self, shape: tuple[int, ...]) -> Any:
        """A float32 host tensor of ``shape`` (pinned on CUDA, allocated once and reused)."""
        import torch

        return torch.empty(shape, dtype=torch.float32, pin_memory=self.cuda)

    def clock(self) -> StepClock:
        """A new clock for one shard's device steps."""
        return StepClock(self.cuda)

    def upload(self, host: Any) -> tuple[Any, Any]:
        """``host`` (a host tensor) on the device, and the event after which ``host`` may be
        overwritten (``None`` on CPU, where the input is ``host`` itself)."""
        if not self.cuda:
            return host, None
        import torch

        x = host.to(self.name, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return x, done

    def download(self, outs: dict[str, Any], dest: dict[str, Any], rows: slice,
                 clock: StepClock) -> None:
        """Copy each ``outs[layer]`` (device (n, ...) float32) into ``dest[layer][rows]``
        (host); on CUDA asynchronously on the side stream, complete after :meth:`fence`."""
        if self._side is None:
            with clock("copy"):
                for layer, tensor in outs.items():
                    dest[layer][rows].copy_(tensor)
            return
        import torch

        self._side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._side), clock("copy"):
            for layer, tensor in outs.items():
                dest[layer][rows].copy_(tensor, non_blocking=True)
                tensor.record_stream(self._side)

    def fence(self) -> Any:
        """An event marking every download issued so far (``None`` on CPU: already done)."""
        if self._side is None:
            return None
        import torch

        done = torch.cuda.Event()
        done.record(self._side)
        return done

    @staticmethod
    def wait(event: Any) -> None:
        """Block this thread until ``event`` (from :meth:`upload` or :meth:`fence`) is done."""
        if event is not None:
            event.synchronize()


JPEG_MAGIC = b"\xff\xd8\xff"


def decode_on_device(items: list[bytes | np.ndarray], spec: PreprocessSpec, device: str,
                     fallback: Callable[[int], np.ndarray]) -> Any:
    """Decode, resize and normalise a batch on ``device`` (nvJPEG on CUDA).

    Encoded JPEGs are decoded together (``torchvision.io.decode_jpeg`` on a list), resized
    with bilinear antialiased interpolation when needed and normalised as
    :func:`~ray_dissect.models.extract.normalise` does; the pixels differ slightly from
    PIL's (no GPU decoder reproduces them), which is why ``gpu_decode`` is a hashed option.

    Args:
        items: per image, its encoded JPEG bytes, or an already normalised (3, size, size)
            float32 array (a non-JPEG file decoded on the CPU).
        spec: size, mean and std.
        device: where to decode.
        fallback: ``fallback(i)`` gives the normalised (3, size, size) float32 array of
            item i when the device cannot decode it (e.g. a truncated file).
    Returns:
        (n, 3, size, size) float32 tensor on ``device``.
    """
    import torch

    size = spec.size
    out = torch.empty((len(items), 3, size, size), dtype=torch.float32, device=device)
    jpegs = {i: item for i, item in enumerate(items) if isinstance(item, bytes)}
    for i, image in zip(jpegs, _decode_jpegs(list(jpegs.values()), device), strict=True):
        out[i] = (torch.from_numpy(fallback(i)).to(device) if image is None
                  else _normalised(image, spec))
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray):
            out[i] = torch.from_numpy(item).to(device)
    return out


def _decode_jpegs(blobs: list[bytes], device: str) -> list[Any]:
    """(3, h, w) uint8 tensors on ``device``, ``None`` where a blob does not decode.

    torchvision's decoders are deprecated since 0.29 in favour of TorchCodec (>= 0.16,
    ``torchcodec.decoders.decode_jpeg``), not a dependency yet: the warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode_with_torchvision(blobs, device)


def _decode_with_torchvision(blobs: list[bytes], device: str) -> list[Any]:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    def one(blob: bytes) -> Any:
        try:
            data = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except (RuntimeError, ValueError):
            return None

    if not blobs:
        return []
    try:
        tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
    except (RuntimeError, ValueError):  # one bad file fails the batch: find it
        return [one(blob) for blob in blobs]


def _resize_crop(x: Any, resize: int, size: int) -> Any:
    """(3, h, w) float32 tensor -> (3, size, size): the shorter side resized to ``resize``
    (bilinear, antialiased), then the centre crop (:func:`~ray_dissect.models.crop.crop_box`)."""
    import torch.nn.functional as F

    rh, rw, top, left = crop_box(int(x.shape[1]), int(x.shape[2]), resize, size)
    if (rh, rw) != tuple(x.shape[1:]):
        x = F.interpolate(x[None], size=(rh, rw), mode="bilinear", align_corners=False,
                          antialias=True)[0]
    return x[:, top:top + size, left:left + size]


def _normalised(image: Any, spec: PreprocessSpec) -> Any:
    """(3, h, w) uint8 -> (3, size, size) float32, ``(x / 255 - mean) / std``."""
    import torch
    import torch.nn.functional as F

    x = image.to(torch.float32)
    if spec.resize is not None:
        x = _resize_crop(x, spec.resize, spec.size)
    elif tuple(x.shape[1:]) != (spec.size, spec.size):
        x = F.interpolate(x[None], size=(spec.size, spec.size), mode="bilinear",
                          align_corners=False, antialias=True)[0]
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device)[:, None, None]
    std = torch.tensor(spec.std, dtype=torch.float32, device=x.device)[:, None, None]
    return (x / 255.0 - mean) / std
