#!/usr/bin/env python3
"""A stand-in for released weights that is actually good, for measuring adaptation where no
released file can be downloaded (issue 25): a torchvision ResNet-18 trained *with labels* on
DATA/train/<class>/ for a few minutes at 96 px, saved as a torchvision state_dict (.pth, the
zip format `dino-curate` reads; `fc.*` is ignored as DINO's backbone has no classifier).
It is a bench tool, not shipped: the labels it uses are exactly what a user does not have.

usage: standin_supervised.py DATA OUT.pth [--minutes 10] [--size 96] [--threads 2] [--seed 0]
Prints one JSON line: steps, epochs, seconds, last training accuracy.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torchvision
from torchvision import transforms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    tf = transforms.Compose([
        transforms.RandomResizedCrop(args.size, scale=(0.35, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    data = torchvision.datasets.ImageFolder(f"{args.data}/train", transform=tf)
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True, num_workers=1,
                                         drop_last=True, persistent_workers=True)
    model = torchvision.models.resnet18(weights=None, num_classes=len(data.classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
                          nesterov=True)
    budget = args.minutes * 60
    start = time.time()
    steps = epochs = 0
    correct = seen = 0
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    while time.time() - start < budget:
        correct = seen = 0
        for x, y in loader:
            elapsed = time.time() - start
            if elapsed >= budget:
                break
            for group in opt.param_groups:  # cosine over the time budget
                group["lr"] = 0.1 * 0.5 * (1 + torch.cos(torch.tensor(elapsed / budget * 3.14159))).item()
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        epochs += 1
    torch.save(model.state_dict(), args.out)
    print(json.dumps({"steps": steps, "epochs": epochs, "seconds": round(time.time() - start),
                      "train_accuracy_last_epoch": round(correct / max(seen, 1), 3)}))


if __name__ == "__main__":
    main()
