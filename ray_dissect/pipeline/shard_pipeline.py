"""The in-actor extraction pipeline: decode threads, one device thread, one writer thread.

A shard (``shard_images`` images in whole batches of ``batch_size``) flows through three
stages, each kept busy by the others:

1. *decode*: a pool of ``decode_threads`` threads reads, decodes and normalises each batch
   into a free buffer of a ring of ``queue_batches`` (batch_size, 3, size, size) float32
   host buffers (pinned on CUDA; one batch per task, image i of the batch in row i, so the
   order in which batches finish does not matter). An unreadable image becomes a black image,
   exactly as on the serial path, and is reported.
2. *device* (one thread): uploads each batch (``non_blocking`` from pinned memory on CUDA),
   runs the forward with hooks, and copies every layer's output into the shard's host buffer
   (shard_images, units, h, w) float32 (on CUDA on a side stream, so the copy of batch b
   overlaps the forward of b + 1). Two shard buffers exist: one filling, one being written.
3. *write* (one thread): waits for the shard's copies, zeros the rows of unreadable images and
   writes each layer's Zarr shard whole, then its done marker.

:meth:`ShardPipeline.run` queues one shard and blocks until it is written (so a returned call
still means "written and marked"); with two callers (a threaded actor with two calls in
flight) shard s is written and shard s+1 decoded while s+1 runs through the model. Batches
are the serial path's, computed by the same code (:func:`ray_dissect.models.extract.normalise`,
:meth:`~ray_dissect.models.extract.Extractor.forward`), so the store is bit-identical to it
whatever the number of threads (tested). An error in any stage fails the shard it hit and
every later one (the pipeline is then broken and says why), as the serial path would raise.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ray_dissect.datasets.base import BadSampleError, ImageDataset
from ray_dissect.job.layout import JobDir, layer_key, shard_range
from ray_dissect.models.device import JPEG_MAGIC, Device, StepClock, decode_on_device
from ray_dissect.models.extract import Extractor, normalise
from ray_dissect.spec import JobSpec, ResourceSpec
from ray_dissect.storage import arrays

log = logging.getLogger(__name__)


class ExtractionEnv(Protocol):
    """What the pipeline reads of its actor's environment
    (:class:`ray_dissect.pipeline.context.WorkEnv` is one)."""

    @property
    def spec(self) -> JobSpec: ...

    @property
    def job(self) -> JobDir: ...

    @property
    def dataset(self) -> ImageDataset: ...

    @property
    def extractor(self) -> Extractor: ...

    @property
    def device(self) -> str: ...

    def keep_chosen(self, maps: dict[str, Any]) -> dict[str, Any]: ...

STEPS = ("decode", "forward", "copy", "write", "wait")
"""The per-shard time breakdown, in seconds: decode (summed over decode threads), forward and
copy (device time: host-to-device plus device-to-host), write (compress and store), wait (the
device thread idle, waiting for decoded batches or a free shard buffer)."""


@dataclass(frozen=True)
class ShardResult:
    """What extracting one shard returns.

    Attributes:
        bad: (global image index, reason) of each unreadable image, in index order.
        breakdown: seconds per step of :data:`STEPS`.
    """

    bad: list[tuple[int, str]]
    breakdown: dict[str, float]


def decode_threads(res: ResourceSpec) -> int:
    """Threads decoding images per actor: ``decode_threads``, or for ``auto`` the actor's
    CPUs not used by torch (``cpus_per_actor - threads_per_actor``), at least 1."""
    if res.decode_threads != "auto":
        return res.decode_threads
    return max(1, int(res.cpus_per_actor) - res.threads_per_actor)


@dataclass
class _Slot:
    """One ring buffer (batch_size, 3, size, size) float32 and the event after which it may
    be overwritten (``None``: now)."""

    tensor: Any
    ready: Any = None


@dataclass
class _Shard:
    """A shard on its way through the pipeline."""

    shard: int
    start: int
    stop: int
    clock: StepClock
    future: Future[ShardResult] = field(default_factory=Future)
    bad: list[tuple[int, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))
    buffers: dict[str, Any] | None = None
    fence: Any = None


@dataclass
class _Decoded:
    """A decoded batch: its unreadable images, the decode seconds and, when decoding on the
    device, per image its encoded JPEG or its normalised (3, size, size) float32 array."""

    bad: list[tuple[int, str]]
    seconds: float
    items: list[bytes | np.ndarray] | None = None


@dataclass
class _Batch:
    """Images [start, stop) of a shard, decoding into ``slot``."""

    shard: _Shard
    start: int
    stop: int
    slot: _Slot
    decoded: Future[_Decoded]


class ShardPipeline:
    """The three-stage extraction pipeline of one model replica (see the module doc).

    With ``resources.gpu_decode`` on a CUDA device, the decode threads only read the files
    and the device thread decodes each batch's JPEGs with nvJPEG
    (:func:`~ray_dissect.models.device.decode_on_device`; other files and the ones nvJPEG
    refuses are decoded with PIL as usual); on CPU the option does nothing.

    Args:
        env: the actor's environment (spec, job directory, dataset, extractor, device).
        decode_on_device: force device decoding on or off (``None``: ``gpu_decode`` on CUDA;
            tests turn it on on the CPU, where torchvision decodes instead of nvJPEG).
    """

    def __init__(self, env: ExtractionEnv, decode_on_device: bool | None = None) -> None:
        res = env.spec.resources
        self.spec, self.job = env.spec, env.job
        self.dataset, self.extractor = env.dataset, env.extractor
        self.keep_chosen = env.keep_chosen
        self.device = Device(env.device)
        self._on_device = self._device_decoding(decode_on_device)
        size = 0 if self._on_device else env.spec.model.preprocess.size
        self._free: queue.Queue[_Slot] = queue.Queue()
        for _ in range(res.queue_batches):
            self._free.put(_Slot(self.device.host_empty((res.batch_size, 3, size, size))))
        self._buffers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        for _ in range(2):
            self._buffers.put(None)  # allocated on first use, once the layer shapes are known
        self._to_device: queue.Queue[_Batch | None] = queue.Queue()
        self._to_writer: queue.Queue[_Shard | None] = queue.Queue()
        self._feed = threading.Lock()
        self._error: BaseException | None = None
        self._pool = ThreadPoolExecutor(decode_threads(res), thread_name_prefix="decode")
        self._threads = [threading.Thread(target=self._device_loop, name="device", daemon=True),
                         threading.Thread(target=self._write_loop, name="writer", daemon=True)]
        for thread in self._threads:
            thread.start()

    def run(self, shard: int) -> ShardResult:
        """Extract shard ``shard`` for every layer and write it; return once it is written.

        Thread-safe: concurrent calls go through the pipeline one after the other, in the
        order they arrive, overlapping as the module doc says.

        Raises:
            whatever a stage raised for this shard (or an earlier one: the pipeline is broken).
        """
        res = self.spec.resources
        start, stop = shard_range(shard, res.shard_images, len(self.dataset))
        job = _Shard(shard, start, stop, self.device.clock())
        with self._feed:
            for b0 in range(start, stop, res.batch_size):
                if self._error is not None or job.future.done():
                    break
                slot = self._free.get()
                b1 = min(b0 + res.batch_size, stop)
                decoded = self._pool.submit(self._decode, slot, b0, b1)
                self._to_device.put(_Batch(job, b0, b1, slot, decoded))
        if self._error is not None:
            _settle(job.future, self._error)
        return job.future.result()

    def close(self) -> None:
        """Stop the threads once the queued work is done."""
        self._to_device.put(None)
        for thread in self._threads:
            thread.join(timeout=60)
        self._pool.shutdown(wait=True)

    def _device_decoding(self, wanted: bool | None) -> bool:
        if wanted is None:
            wanted = self.spec.resources.gpu_decode and self.device.cuda
        if wanted and not hasattr(self.dataset, "read_image_bytes"):
            log.warning("dataset %s cannot hand out encoded images; decoding on the CPU",
                        type(self.dataset).__name__)
            return False
        return wanted

    def _decode(self, slot: _Slot, b0: int, b1: int) -> _Decoded:
        """Decode images [b0, b1) into the slot's rows (or, decoding on the device, read
        their files)."""
        t0 = time.perf_counter()
        self.device.wait(slot.ready)
        bad: list[tuple[int, str]] = []
        if self._on_device:
            items = [self._encoded(index, bad) for index in range(b0, b1)]
            return _Decoded(bad, time.perf_counter() - t0, items)
        rows = slot.tensor.numpy()
        for index in range(b0, b1):
            normalise(self._image(index, bad), self.spec.model.preprocess, rows[index - b0])
        return _Decoded(bad, time.perf_counter() - t0)

    def _image(self, index: int, bad: list[tuple[int, str]]) -> np.ndarray:
        """Image ``index`` (h, w, 3) uint8; an unreadable one is black and noted in ``bad``."""
        try:
            return self.dataset.read_image(index)
        except BadSampleError as err:
            size = self.spec.model.preprocess.size
            bad.append((index, str(err)))
            return np.zeros((size, size, 3), dtype=np.uint8)

    def _normalised(self, index: int, bad: list[tuple[int, str]]) -> np.ndarray:
        """Image ``index`` decoded on the CPU, as (3, size, size) float32."""
        spec = self.spec.model.preprocess
        out = np.empty((3, spec.size, spec.size), dtype=np.float32)
        normalise(self._image(index, bad), spec, out)
        return out

    def _encoded(self, index: int, bad: list[tuple[int, str]]) -> bytes | np.ndarray:
        """A JPEG's bytes, for the device to decode; anything else decoded here."""
        try:
            data = self.dataset.read_image_bytes(index)  # type: ignore[attr-defined]
        except BadSampleError:
            data = b""
        return data if data.startswith(JPEG_MAGIC) else self._normalised(index, bad)

    def _device_loop(self) -> None:
        import torch

        torch.set_num_threads(self.extractor.threads)  # the serial path's thread count
        self.device.bind()
        while (batch := self._to_device.get()) is not None:
            try:
                if self._error is not None:
                    self._fail(batch.shard, self._error)
                elif not batch.shard.future.done():
                    self._forward(batch)
            except BaseException as err:
                self._fail(batch.shard, err)
            finally:
                batch.decoded.exception()  # never hand out a slot still being filled
                self._free.put(batch.slot)
        self._to_writer.put(None)

    def _forward(self, batch: _Batch) -> None:
        """Run one decoded batch and queue its copies; hand the shard on after its last."""
        job = batch.shard
        t0 = time.perf_counter()
        decoded = batch.decoded.result()
        job.seconds["wait"] += time.perf_counter() - t0
        job.seconds["decode"] += decoded.seconds
        bad = list(decoded.bad)
        if decoded.items is None:
            with job.clock("copy"):
                x, batch.slot.ready = self.device.upload(
                    batch.slot.tensor[:batch.stop - batch.start])
        else:
            with job.clock("decode"):
                x = decode_on_device(decoded.items, self.spec.model.preprocess,
                                     self.device.name,
                                     lambda i: self._normalised(batch.start + i, bad))
        job.bad.extend(sorted(bad))
        with job.clock("forward"):
            outs = self.keep_chosen(self.extractor.forward(x))
        if job.buffers is None:
            job.buffers = self._take_buffers(job, outs)
        rows = slice(batch.start - job.start, batch.stop - job.start)
        self.device.download(outs, job.buffers, rows, job.clock)
        if batch.stop == job.stop:
            job.fence = self.device.fence()
            self._to_writer.put(job)

    def _take_buffers(self, job: _Shard, outs: dict[str, Any]) -> dict[str, Any]:
        """A free shard buffer per layer (shard_images, units, h, w) float32; waits for one."""
        t0 = time.perf_counter()
        buffers = self._buffers.get()
        job.seconds["wait"] += time.perf_counter() - t0
        if buffers is None:
            n = self.spec.resources.shard_images
            buffers = {layer: self.device.host_empty((n, *t.shape[1:]))
                       for layer, t in outs.items()}
        return buffers

    def _write_loop(self) -> None:
        while (job := self._to_writer.get()) is not None:
            try:
                self._write(job)
            except BaseException as err:
                self._fail(job, err)

    def _write(self, job: _Shard) -> None:
        """Write every layer's shard (data, then done marker) and complete the shard."""
        self.device.wait(job.fence)
        t0 = time.perf_counter()
        n, res = job.stop - job.start, self.spec.resources
        bad_rows = [index - job.start for index, _ in job.bad]
        buffers, job.buffers = job.buffers, None
        if buffers is None:
            raise RuntimeError(f"shard {job.shard} reached the writer without its buffers")
        try:
            for layer in self.spec.layers:
                data = buffers[layer][:n].numpy()
                data[bad_rows] = 0.0
                arrays.write_shard(self.job.activations_zarr, layer_key(layer), job.shard,
                                   res.shard_images, data)
        finally:
            self._buffers.put(buffers)
        job.seconds["write"] = time.perf_counter() - t0
        for step, seconds in job.clock.totals().items():
            job.seconds[step] += seconds
        job.future.set_result(ShardResult(job.bad, job.seconds))

    def _fail(self, job: _Shard, err: BaseException) -> None:
        """Fail ``job`` (and, by breaking the pipeline, every later shard) with ``err``."""
        if self._error is None:
            log.error("extraction pipeline stopped at shard %d: %r", job.shard, err)
            self._error = err
        if job.buffers is not None:
            self._buffers.put(job.buffers)
            job.buffers = None
        _settle(job.future, err)


def _settle(future: Future[ShardResult], err: BaseException) -> None:
    """Fail ``future`` with ``err`` unless it is already settled (two threads may try)."""
    try:
        future.set_exception(err)
    except InvalidStateError:
        pass
