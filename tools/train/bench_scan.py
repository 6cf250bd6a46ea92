#!/usr/bin/env python3
"""Times the training scan (forward + backward) on the GPU: the chunked PyTorch scan at each
--chunk, and scan_cuda.cu's kernels (peers in the same run); --profile lists the chunked scan's kernels.

    python3 tools/train/bench_scan.py [--b 32 --l 512 --di 768 --chunk 32]
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--b", type=int, default=32)
    ap.add_argument("--l", type=int, default=512)
    ap.add_argument("--di", type=int, default=768)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--chunk", type=int, nargs="+", default=[32])
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    b, l, di, n = a.b, a.l, a.di, a.n
    x = torch.randn(b, l, di, device=dev, requires_grad=True)
    delta = torch.nn.functional.softplus(torch.randn(b, l, di, device=dev) - 3).requires_grad_()
    A = -torch.exp(torch.randn(di, n, device=dev)).requires_grad_()
    B = torch.randn(b, l, n, device=dev, requires_grad=True)
    C = torch.randn(b, l, n, device=dev, requires_grad=True)
    D = torch.randn(di, device=dev, requires_grad=True)
    impls = [(f"chunk {T}", lambda T=T: train.selective_scan_chunked(x, delta, A, B, C, D, chunk=T))
             for T in a.chunk]
    if train.cuda_scan_lib() is not None:
        impls.append(("scan_cuda.cu", lambda: train.selective_scan_cuda(x, delta, A, B, C, D)))
    else:
        print("scan_cuda.cu unavailable:", train._CUDA_SCAN.get("error"), flush=True)
    for label, scan in impls:
        def run():
            y, s = scan()
            (y.square().mean() + s.mean()).backward()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(3):
            run()
        torch.cuda.synchronize()
        t = time.time()
        for _ in range(5):
            run()
        torch.cuda.synchronize()
        print(f"b{b} l{l} di{di} n{n} {label}: {(time.time() - t) / 5 * 1000:.1f} ms fwd+bwd, "
              f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            y, s = train.selective_scan_chunked(x, delta, A, B, C, D, chunk=a.chunk[-1])
            (y.square().mean() + s.mean()).backward()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18), flush=True)


if __name__ == "__main__":
    main()
