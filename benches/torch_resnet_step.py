#!/usr/bin/env python3
"""The ResNet variant of ../shared/tools/torch_dino_step.py (copied, backbone swapped): a torchvision
resnet18/resnet50 with fc = Identity, BatchNorm in training mode in student and teacher (the
teacher is never put in eval mode, the EMA moves parameters only), as the official DINO code.

Original description: a PyTorch DINO training step built from public PyPI packages only (torch + timm), written here to
mirror the official recipe (facebookresearch/dino main_dino.py): multi-crop forward grouped by
resolution, DINOHead with an L2 bottleneck and a weight-normed last layer, DINOLoss with centring,
AdamW with no decay on biases/1-D params, per-tensor gradient clipping, EMA teacher.
It exists so that the Rust trainer can be timed side by side, in one run, without the fetched
official code. Prints one JSON line: {"median_step_s", "img_per_s", ...}.

usage: torch_resnet_step.py [--arch resnet18] [--global-size 224] [--local-size 96] [--local-crops 6]
                          [--batch 8] [--out-dim 4096] [--steps 7] [--warmup 3] [--threads 2]
"""
import argparse
import json
import statistics
import time

import torchvision
import torch
import torch.nn as nn
import torch.nn.functional as F

ARCH = {"resnet18": 512, "resnet50": 2048}


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, hidden=2048, bottleneck=256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                 nn.GELU(), nn.Linear(hidden, bottleneck))
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class Net(nn.Module):
    def __init__(self, arch, out_dim, drop_path):
        super().__init__()
        self.backbone = getattr(torchvision.models, arch)(weights=None)
        self.backbone.fc = nn.Identity()
        self.head = DINOHead(ARCH[arch], out_dim)

    def forward(self, crops):
        # group consecutive crops of the same resolution, as the official MultiCropWrapper does
        outs, i = [], 0
        while i < len(crops):
            j = i
            while j < len(crops) and crops[j].shape[-1] == crops[i].shape[-1]:
                j += 1
            outs.append(self.backbone(torch.cat(crops[i:j])))
            i = j
        return self.head(torch.cat(outs))


def dino_loss(student, teacher, center, ncrops, t_temp=0.04, s_temp=0.1):
    s = (student / s_temp).chunk(ncrops)
    t = F.softmax((teacher - center) / t_temp, dim=-1).detach().chunk(2)
    total, n = 0.0, 0
    for iq, q in enumerate(t):
        for v in range(ncrops):
            if v == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
            n += 1
    new_center = center * 0.9 + teacher.mean(dim=0, keepdim=True) * 0.1
    return total / n, new_center.detach()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=96)
    ap.add_argument("--local-crops", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out-dim", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", action="store_true", help="fp16 autocast + GradScaler, as the official use_fp16")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    student = Net(a.arch, a.out_dim, 0.1).to(dev)
    teacher = Net(a.arch, a.out_dim, 0.0).to(dev)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    decay = [p for n, p in student.named_parameters() if p.requires_grad and not (n.endswith(".bias") or p.ndim == 1)]
    no_decay = [p for n, p in student.named_parameters() if p.requires_grad and (n.endswith(".bias") or p.ndim == 1)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.04}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-4)
    center = torch.zeros(1, a.out_dim, device=dev)
    scaler = torch.amp.GradScaler("cuda") if a.amp else None
    ncrops = 2 + a.local_crops
    crops = [torch.randn(a.batch, 3, a.global_size, a.global_size, device=dev) for _ in range(2)]
    crops += [torch.randn(a.batch, 3, a.local_size, a.local_size, device=dev) for _ in range(a.local_crops)]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = []
    for it in range(a.warmup + a.steps):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.float16, enabled=a.amp):
            with torch.no_grad():
                t_out = teacher(crops[:2])
            s_out = student(crops)
            loss, center = dino_loss(s_out.float(), t_out.float(), center, ncrops)
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        for p in student.parameters():
            if p.grad is not None:
                norm = p.grad.data.norm(2)
                coef = 3.0 / (norm + 1e-6)
                if coef < 1:
                    p.grad.data.mul_(coef)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        with torch.no_grad():
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.data.mul_(0.996).add_((1 - 0.996) * ps.detach().data)
        sync()
        if it >= a.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({"impl": "pytorch+torchvision", "arch": a.arch, "global": a.global_size, "local": a.local_size,
                      "local_crops": a.local_crops, "batch": a.batch, "out_dim": a.out_dim,
                      "threads": a.threads, "device": a.device, "amp": a.amp, "median_step_s": round(med, 4),
                      "img_per_s": round(a.batch / med, 3), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
