"""The model, the data of one client, training and evaluation."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn


class Net(nn.Module):
    """64 pixels -> 32 hidden units (with BatchNorm) -> 10 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def load_data(partition_id: int, num_partitions: int) -> tuple[torch.Tensor, ...]:
    """This client's share of the digits (every ``num_partitions``-th sample), 80 % train, 20 % test."""
    digits = load_digits()
    x = torch.tensor(digits.data[partition_id::num_partitions] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target[partition_id::num_partitions], dtype=torch.int64)
    cut = int(0.8 * len(y))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def train(net: Net, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, mu: float = 0.0) -> float:
    """Mini-batch SGD (FedProx's proximal term when ``mu > 0``); the mean loss of the last epoch."""
    start = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    net.train()
    losses = []
    for _ in range(epochs):
        losses = []
        for idx in torch.randperm(len(y), generator=generator).split(32):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            prox = sum(((p - p0) ** 2).sum() for p, p0 in zip(net.parameters(), start))
            opt.zero_grad()
            (loss + 0.5 * mu * prox).backward()
            opt.step()
            losses.append(loss.item())
    return float(np.mean(losses))


def evaluate(net: Net, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Loss and accuracy on ``(x, y)``."""
    net.eval()
    with torch.no_grad():
        out = net(x)
    return float(nn.functional.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())
