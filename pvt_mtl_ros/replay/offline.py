"""Offline replay: every frame of the bag through the network in batches, as fast as the
machine allows."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import torch
from tqdm import tqdm

from pvt_mtl_ros.inference.backends import Predictor
from pvt_mtl_ros.inference.export import default_cache_dir
from pvt_mtl_ros.sim.calibration import calibration_frames

from .bag_io import BagReadError
from .session import Decoded, ReplayOptions, ReplaySession, check_output


def run_offline(opts: ReplayOptions, model: Any) -> dict[str, Any]:
    """Replay `opts.bag` with `model` (eval mode, on opts.device); returns the report dict.

    A network runs through a `Predictor` with the `opts.backend` spec (an ONNX export or
    torch.compile happens here, before the first frame; an int8 export calibrates on
    simulator frames of the model's input size, as the node's does); anything else with
    `.cfg` and `.predict` (a Predictor, a stand-in) is used as it is.

    The report and the output bag are written whatever happens: a bag that breaks part-way
    keeps every frame read before the break; an interrupt keeps every finished batch.
    """
    check_output(opts)  # nothing is removed before the new results exist
    if isinstance(model, torch.nn.Module):
        frames = partial(calibration_frames, *model.cfg.input_size)  # rendered only for int8
        model = Predictor(model, opts.backend, cache_dir=default_cache_dir(), calibration=frames)
    session = ReplaySession(opts, model)
    try:
        with session.recording():
            session.open()
            total = session.source.frame_count()
            if opts.max_frames is not None:
                total = min(total, opts.max_frames)
            with tqdm(total=total, unit="frame", disable=not opts.progress, leave=False) as bar:
                pending: list[Decoded] = []
                read = 0
                try:
                    for raw in session.source.frames():
                        if opts.max_frames is not None and read >= opts.max_frames:
                            break
                        read += 1
                        bar.update(1)
                        frame = session.decode(raw)
                        if frame is not None:
                            pending.append(frame)
                        if len(pending) >= opts.batch_size:
                            infer(session, pending)
                            pending = []
                except BagReadError as err:
                    # Everything read so far is good: finish it, then report the break.
                    session.fail("bag read error", err)
                    session.warn(str(err))
                infer(session, pending)
    finally:
        report = session.finish()
    return report


def infer(session: ReplaySession, frames: list[Decoded]) -> None:
    if not frames:
        return
    t0 = time.perf_counter()
    results = session.model.predict([f.rgb for f in frames], **session.predict_kwargs())
    if session.opts.device.startswith("cuda"):
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    session.latency["inference_batch"].append(1000 * (t1 - t0))
    for frame, result in zip(frames, results):
        session.latency["inference_per_frame"].append(1000 * (t1 - t0) / len(frames))
        session.record(frame, result)
        # read -> result written: includes waiting for the batch to fill
        session.latency["frame"].append(1000 * (time.perf_counter() - frame.t_read))
