#!/usr/bin/env python3
"""Parity fixtures for the ResNet backbone and the BatchNorm DINO head.

Run from the repository root:  /work/torchenv/bin/python scripts/make_resnet_fixtures.py
Writes tests/fixtures/resnet/ (safetensors, one .pth, manifest.json).

Design (fixtures must stay small, and weights cannot be regenerated on the Rust side from a
seed, the RNGs differ): the networks are torchvision's own `ResNet` class, `BasicBlock` and
`Bottleneck`, `_make_layer` and init, built with the channel width divided (64 -> 8 for the
ResNet-18 layout, 64 -> 4 for the ResNet-50 layout), every module and key name unchanged.
Full-size resnet18/resnet50 are checked by key names and shapes only (keys.json). BatchNorm
affine parameters and running statistics are randomised so that eval mode and the
normalisation are exercised with non-trivial values.
"""
import hashlib
import json
import os
import platform

import numpy as np
import safetensors
import safetensors.torch
import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

OUT = os.path.join("tests", "fixtures", "resnet")


class NarrowResNet(ResNet):
    """torchvision's ResNet.__init__ with `width` instead of 64 and fc = Identity."""

    def __init__(self, block, layers, width):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


class DINOHead(nn.Module):
    """The official DINOHead (facebookresearch/dino vision_transformer.py), use_bn=True path."""

    def __init__(self, in_dim, out_dim, use_bn=False, norm_last_layer=True, nlayers=3,
                 hidden_dim=2048, bottleneck_dim=256):
        super().__init__()
        layers = [nn.Linear(in_dim, hidden_dim)]
        if use_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.GELU())
        for _ in range(nlayers - 2):
            layers.append(nn.Linear(hidden_dim, hidden_dim))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.mlp(x)
        x = nn.functional.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


def randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                m.num_batches_tracked.fill_(3)


def state(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def grads(model, x):
    out = {"input": x.grad.detach().clone()}
    for name, p in model.named_parameters():
        if p.grad is not None:
            out[name] = p.grad.detach().clone()
    return out


def backbone_fixture(name, block, layers, width, gen):
    model = NarrowResNet(block, layers, width)
    randomise_bn(model, gen)
    init = state(model)
    x64 = torch.randn(4, 3, 64, 64, generator=gen)
    x32 = torch.randn(4, 3, 32, 32, generator=gen)
    io = {"x64": x64, "x32": x32}
    model.eval()
    with torch.no_grad():
        io["eval_out32"] = model(x32)
        io["eval_out64"] = model(x64)
    model.train()
    x = x64.clone().requires_grad_(True)
    out = model(x)
    io["train_out64"] = out.detach().clone()
    r = torch.randn(out.shape, generator=gen)
    io["loss_weights"] = r
    (out * r).sum().backward()
    for k, v in grads(model, x).items():
        io[f"grad.{k}"] = v
    for k, v in model.state_dict().items():
        if "running" in k or "num_batches" in k:
            io[f"after.{k}"] = v.detach().clone()
    with torch.no_grad():
        io["train_out32"] = model(x32)  # second train forward, after the first moved the stats
    safetensors.torch.save_file(init, os.path.join(OUT, f"{name}_weights.safetensors"))
    safetensors.torch.save_file({k: v.contiguous() for k, v in io.items()},
                                os.path.join(OUT, f"{name}_io.safetensors"))
    return init


def head_fixture(gen):
    head = DINOHead(64, 256, use_bn=True, hidden_dim=128, bottleneck_dim=32)
    randomise_bn(head, gen)
    weights = {k: v.detach().clone().contiguous() for k, v in head.state_dict().items()}
    x = torch.randn(8, 64, generator=gen).requires_grad_(True)
    head.train()
    out = head(x)
    r = torch.randn(out.shape, generator=gen)
    (out * r).sum().backward()
    io = {"x": x.detach().clone(), "train_out": out.detach().clone(), "loss_weights": r}
    for k, v in grads(head, x).items():
        io[f"grad.{k}"] = v
    for k, v in head.state_dict().items():
        if "running" in k or "num_batches" in k:
            io[f"after.{k}"] = v.detach().clone()
    safetensors.torch.save_file(weights, os.path.join(OUT, "head_bn_weights.safetensors"))
    safetensors.torch.save_file(io, os.path.join(OUT, "head_bn_io.safetensors"))


def full_size_keys():
    keys = {}
    for arch in ["resnet18", "resnet50"]:
        model = getattr(torchvision.models, arch)(weights=None)
        model.fc = nn.Identity()
        keys[arch] = {k: list(v.shape) for k, v in model.state_dict().items()}
    with open(os.path.join(OUT, "keys.json"), "w") as f:
        json.dump(keys, f, indent=1)


def describe(path):
    info = {"bytes": os.path.getsize(path),
            "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()}
    if path.endswith(".safetensors"):
        with safetensors.safe_open(path, "pt") as f:
            info["tensors"] = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    return info


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False  # plain ATen kernels: deterministic sums
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    init18 = backbone_fixture("resnet18_w8", BasicBlock, [2, 2, 2, 2], 8, gen)
    backbone_fixture("resnet50_w4", Bottleneck, [3, 4, 6, 3], 4, gen)
    # The same weights as a zip-format .pth state dict, as dino_resnet50_pretrain.pth is.
    torch.save(init18, os.path.join(OUT, "resnet18_w8.pth"))
    head_fixture(gen)
    full_size_keys()
    files = sorted(f for f in os.listdir(OUT) if f != "manifest.json")
    manifest = {
        "generator": "scripts/make_resnet_fixtures.py (regenerate: /work/torchenv/bin/python "
                     "scripts/make_resnet_fixtures.py)",
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "torch_threads_used": 1,
        "design": "torchvision's ResNet/BasicBlock/Bottleneck/_make_layer/init with the channel "
                  "width divided (resnet18 layout at width 8 -> 64-d output; resnet50 layout "
                  "at width 4 -> 128-d output), key names unchanged; full-size key names and "
                  "shapes in keys.json. BatchNorm weights, biases and running statistics "
                  "randomised (num_batches_tracked = 3).",
        "contents": {
            "<net>_weights.safetensors": "state_dict before any forward (params + buffers)",
            "<net>_io.safetensors": "x64 [4,3,64,64], x32 [4,3,32,32]; eval_out32/eval_out64: "
                                    "eval-mode outputs with the initial state; train_out64: "
                                    "train-mode output; grad.input and grad.<param>: gradients "
                                    "of sum(train_out64 * loss_weights); after.<buffer>: "
                                    "buffers after that one train forward; train_out32: a "
                                    "second train-mode forward on x32",
            "resnet18_w8.pth": "resnet18_w8_weights as torch.save(state_dict) (zip format)",
            "head_bn_*": "official DINOHead(64, 256, use_bn=True, hidden 128, bottleneck 32), "
                         "train mode on x [8, 64]: train_out, grad.*, after.* as above",
        },
        "dtype": "float32 (num_batches_tracked int64)",
        "files": {f: describe(os.path.join(OUT, f)) for f in files},
    }
    manifest["total_bytes"] = sum(v["bytes"] for v in manifest["files"].values())
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {len(files)} files, {manifest['total_bytes']} bytes")


if __name__ == "__main__":
    main()
