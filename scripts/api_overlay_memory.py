#!/usr/bin/env python
"""Peak memory of the REST API server for one large image, without and with an overlay.

    python scripts/api_overlay_memory.py                       # a FracAtlas image enlarged to 7000 x 7000
    python scripts/api_overlay_memory.py --side 4000 --model path/to/bundle
    python scripts/api_overlay_memory.py --mixed 4             # rounds of large and small uploads
    python scripts/api_overlay_memory.py --dicom 3             # rounds of ordinary CR DICOMs

Starts ``fracsight serve`` on 127.0.0.1 (a free port), sends the image as a PNG once with
``overlay=false`` and once with ``overlay=true``, and prints the server's peak resident memory
(VmHWM, from /proc; Linux only) after each, with the wall time of each request. The peak only
grows, so the second figure is the peak of the overlay request.

``--mixed N`` instead sends N rounds of 60 uploads, 24 at a time, each at random the large PNG
or the radiograph as it is, and prints the server's peak and its resident memory after each
round: what a server keeps of large images among small ones.

``--dicom N`` sends N rounds of 8 requests (4 clients, 2 each) of 8 uncompressed 16-bit CR DICOMs
of 2500 x 3000 (15 MB, 7.5 megapixels: an ordinary radiograph, below the large-image rule) and
prints the same: what a server keeps of large request bodies.
"""

from __future__ import annotations

import argparse
import io
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image
from stress_api import free_port, proc_memory, start_server, wait_ready

DEFAULT_IMAGE = (
    Path(__file__).resolve().parents[1].parent / "shared/data/fracatlas/images/Fractured/IMG0000019.jpg"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a radiograph to enlarge")
    parser.add_argument("--side", type=int, default=7000, help="the square image's side in pixels")
    parser.add_argument("--model", default=None, help="bundle (default: the shipped model)")
    parser.add_argument("--mixed", type=int, default=0, metavar="N", help="N rounds of mixed uploads")
    parser.add_argument("--dicom", type=int, default=0, metavar="N", help="N rounds of CR DICOM uploads")
    args = parser.parse_args()
    if args.dicom:
        dicom_rounds(args.image, args.model, args.dicom)
        return

    grey = Image.open(args.image).convert("L").resize((args.side, args.side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    grey.save(buffer, format="PNG")
    data = buffer.getvalue()
    port = free_port()
    server = start_server(args.model, port, max_upload_mb=max(50.0, 2 * len(data) / 2**20))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            wait_ready(client, server)
            print(f"{args.side} x {args.side} PNG, {len(data) / 1e6:.1f} MB; server at start: "
                  f"{proc_memory(server.pid)['peak']:.0f} MB")  # fmt: skip
            if args.mixed:
                mixed_rounds(client, server.pid, args.mixed, data, args.image.read_bytes())
                return
            for overlay in ("false", "true"):
                started = time.perf_counter()
                files = [("files", ("large.png", data, "image/png"))]
                answer = client.post(f"/v1/predict?overlay={overlay}", files=files)
                seconds = time.perf_counter() - started
                peak = proc_memory(server.pid)["peak"]
                print(f"overlay={overlay}: HTTP {answer.status_code}, {seconds:.1f} s, peak {peak:.0f} MB")
    finally:
        server.terminate()
        server.wait(timeout=30)


def cr_dicom(image: Path, rows: int = 3000, cols: int = 2500) -> bytes:
    """``image`` as an uncompressed 16-bit CR DICOM of ``rows`` x ``cols``."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

    grey = Image.open(image).convert("L").resize((cols, rows), Image.Resampling.BILINEAR)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CR"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.asarray(grey, dtype=np.uint16) * 16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_rounds(image: Path, model: str | None, rounds: int) -> None:
    data = cr_dicom(image)
    port = free_port()
    server = start_server(model, port, max_upload_mb=1024)
    files = [("files", (f"cr{k}.dcm", data, "application/dicom")) for k in range(8)]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            wait_ready(client, server)
            print(f"CR DICOM 2500 x 3000, {len(data) / 1e6:.1f} MB; server at start: "
                  f"{proc_memory(server.pid)['rss']:.0f} MB")  # fmt: skip
            with ThreadPoolExecutor(4) as pool:
                for n in range(1, rounds + 1):
                    codes = set(
                        pool.map(lambda _: client.post("/v1/predict", files=files).status_code, range(8))
                    )
                    time.sleep(1)
                    peak, held = proc_memory(server.pid)["peak"], proc_memory(server.pid)["rss"]
                    print(
                        f"round {n}: HTTP {sorted(codes)}, peak {peak:.0f} MB, after the round {held:.0f} MB"
                    )
    finally:
        server.terminate()
        server.wait(timeout=30)


def mixed_rounds(client: httpx.Client, pid: int, rounds: int, large: bytes, small: bytes) -> None:
    def send(data: bytes) -> int:
        return client.post("/v1/predict", files=[("files", ("x.png", data))]).status_code

    chance = random.Random(0)
    with ThreadPoolExecutor(24) as pool:
        for n in range(1, rounds + 1):
            codes = set(pool.map(send, [chance.choice((large, small)) for _ in range(60)]))
            peak, held = proc_memory(pid)["peak"], proc_memory(pid)["rss"]
            print(f"round {n}: HTTP {sorted(codes)}, peak {peak:.0f} MB, after the round {held:.0f} MB")


if __name__ == "__main__":
    main()
