"""Encoding throughput of a checkpoint: image preprocessing and the network, measured apart.

A /search spends nearly all its time here (scanning 1M codes takes under a
millisecond), so these figures bound what one server answers per second.
Preprocessing is what the service's decode pool runs per image (decode with
the service's checks, then resize, crop and scale), in 1 and 2 threads; the
network is `Encoder.encode_tensors` at each batch size in a worker thread (as
the service's batcher runs it), with 1 torch thread and with torch's
default, on the CPU and on CUDA when there is one.  It
measures; it asserts nothing about speed.

    python -m bench.encode_bench            # batch sizes 1..64 (minutes on 2 cores)
    python -m bench.encode_bench --quick    # a smoke run (seconds); writes no results

Results go to stdout and to the "encode" section of bench/results/service_bench.{md,json}.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import torch
from PIL import Image

from bench.index_bench import rate
from bench.report import markdown_table as table
from bench.service_harness import (
    LOAD_HEAD,
    RESULTS,
    grocery_items,
    quiet,
    save_section,
)
from model.encoder import Encoder
from service.images import configure_pillow, decode_image
from service.settings import Settings

BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64]
PREPROCESS_THREADS = [1, 2]  # the service's default DEEPHASH_DECODE_THREADS is 2
SETTINGS = Settings()  # the service's limits on uploads


def decode(data: bytes) -> Image.Image:
    """An upload decoded as the service decodes it, with its checks."""
    return decode_image(data, SETTINGS.max_upload_bytes, SETTINGS.max_image_pixels)


def per_image(fn: Callable[[bytes], object], images: list[bytes], threads: int, min_seconds: float) -> float:
    """Images per second of fn over the images, in a pool of `threads` (as the service's decode pool)."""
    with ThreadPoolExecutor(threads) as pool:
        return rate(lambda: list(pool.map(fn, images)), len(images), min_seconds=min_seconds, min_calls=2)


def network_rate(encoder: Encoder, batch: torch.Tensor, min_seconds: float) -> float:
    """Images per second of the network on one batch, called again and again in a worker thread.

    A worker thread, as the service's batcher runs it: on this machine, with
    other processes busy, the same calls in the main thread with 2 torch
    threads took 2-3 times as long.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="encode") as worker:
        return worker.submit(rate, lambda: encoder.encode_tensors(batch), len(batch), min_seconds, 3).result()


def bench_preprocess(encoder: Encoder, images: list[bytes], threads: list[int], min_seconds: float) -> list[dict]:
    decoded = [decode(data) for data in images]
    stages: dict[str, tuple[Callable, list]] = {
        "decode": (decode, images),
        "resize, crop, scale": (encoder.preprocess_image, decoded),
        "both (the decode pool's job)": (lambda data: encoder.preprocess_image(decode(data)), images),
    }
    rows = []
    for stage, (fn, inputs) in stages.items():
        for t in threads:
            per_s, load = quiet(partial(per_image, fn, inputs, t, min_seconds))
            rows.append({"stage": stage, "threads": t, "images_per_s": per_s, "ms_per_image": 1e3 / per_s,
                         "load": load})
            print(f"  preprocess {stage}, {t} threads: {per_s:,.1f} images/s ({1e3 / per_s:.1f} ms/image); "
                  f"load {load.load_1min:.1f}, others {load.others:.2f}", flush=True)
    return rows


def bench_network(checkpoint: Path, device: str, batch: torch.Tensor, sizes: list[int], torch_threads: int,
                  min_seconds: float) -> list[dict]:
    encoder = Encoder.from_checkpoint(checkpoint, device=device)
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    rows = []
    try:
        for size in sizes:
            per_s, load = quiet(partial(network_rate, encoder, batch[:size], min_seconds))
            rows.append({"device": device, "torch_threads": torch_threads, "batch": size, "images_per_s": per_s,
                         "ms_per_image": 1e3 / per_s, "ms_per_batch": 1e3 * size / per_s, "load": load})
            print(f"  {device}, {torch_threads} torch threads, batch {size}: {per_s:,.1f} images/s "
                  f"({1e3 / per_s:.1f} ms/image); load {load.load_1min:.1f}, others {load.others:.2f}", flush=True)
    finally:
        torch.set_num_threads(before)
    return rows


def markdown(preprocess: list[dict], network: list[dict], image_note: str) -> str:
    pre = table(["stage", "threads", "images/s", "ms/image", *LOAD_HEAD],
                [[r["stage"], str(r["threads"]), f"{r['images_per_s']:,.1f}", f"{r['ms_per_image']:.2f}",
                  *r["load"].cells()] for r in preprocess])
    net = table(["device", "torch threads", "batch", "images/s", "ms/image", "ms/batch", *LOAD_HEAD],
                [[r["device"], str(r["torch_threads"]), str(r["batch"]), f"{r['images_per_s']:,.1f}",
                  f"{r['ms_per_image']:.1f}", f"{r['ms_per_batch']:.1f}", *r["load"].cells()] for r in network])
    return (f"Preprocessing per image ({image_note}); *threads*: a pool as the service's "
            f"DEEPHASH_DECODE_THREADS:\n\n{pre}\n\nThe network (`Encoder.encode_tensors` in a worker thread, "
            f"packed codes back on the host included):\n\n{net}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch sizes 1 and 4, 8 images: a smoke run")
    parser.add_argument("--checkpoint", type=Path, default=SETTINGS.checkpoint)
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--torch-threads", type=int, nargs="+", default=sorted({1, torch.get_num_threads()}),
                        help="CPU rows for each (the service leaves torch's default)")
    parser.add_argument("--seconds", type=float, default=3.0, help="least time per figure")
    parser.add_argument("--out", type=Path, default=RESULTS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    sizes, count, seconds = ([1, 4], 8, 0.2) if args.quick else (BATCH_SIZES, 64, args.seconds)
    items = grocery_items(count)
    images = [item.source.read_bytes() for item in items]
    configure_pillow(SETTINGS.max_image_pixels)
    cpu_encoder = Encoder.from_checkpoint(args.checkpoint, device="cpu")
    size = cpu_encoder.preprocess.input_size
    image_note = f"{count} grocery test JPEGs, {sum(map(len, images)) // count // 1024} KiB each on average, " \
                 f"to {size}x{size}"
    print(f"# Encoding, {args.checkpoint} ({cpu_encoder.bits} bits); {image_note}", flush=True)
    preprocess = bench_preprocess(cpu_encoder, images, PREPROCESS_THREADS, seconds)
    tensors = [cpu_encoder.preprocess_image(decode(data)) for data in images]
    batch = torch.stack([tensors[i % len(tensors)] for i in range(max(sizes))])
    network = []
    for device in args.devices:
        for threads in args.torch_threads if device == "cpu" else [torch.get_num_threads()]:
            network += bench_network(args.checkpoint, device, batch, sizes, threads, seconds)
    if not args.quick:
        save_section("encode", " ".join(["python -m bench.encode_bench", *argv]), markdown(preprocess, network, image_note),
                     {"checkpoint": str(args.checkpoint), "preprocess": preprocess, "network": network}, args.out)


if __name__ == "__main__":
    main()
