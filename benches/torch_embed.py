#!/usr/bin/env python3
"""timm ViT embedding rate (the anchor of `dino-curate bench embed`): MODEL SIZE BATCH f32|bf16.

2 threads, inference_mode, random input, median of 5 batches after 2 warm-ups; bf16 is
torch.autocast on the CPU. Prints {"img_per_s": ...}. Needs torch and timm (a venv).
"""
import time, torch, timm, json, sys
torch.set_num_threads(2)
name, size, bs, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
m = timm.create_model(name, num_classes=0, img_size=size).eval()
x = torch.randn(bs, 3, size, size)
ts = []
with torch.inference_mode():
    for i in range(7):
        t = time.perf_counter()
        if dtype == 'bf16':
            with torch.autocast('cpu', dtype=torch.bfloat16):
                m(x)
        else:
            m(x)
        ts.append(time.perf_counter() - t)
t = sorted(ts[2:])[2]
print(json.dumps({"img_per_s": bs / t}))
